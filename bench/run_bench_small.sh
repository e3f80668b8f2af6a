#!/usr/bin/env bash
# bench-small: dstrain (2 MPI ranks x 1 thread) against a PyTorch DDP reference (2 gloo ranks x
# 1 thread) of the same model, batch and optimizer, measured in the same invocation. Prints the
# tokens/s of each and their ratio (dstrain / DDP; > 1 means dstrain is faster).
# usage: bench/run_bench_small.sh [steps]   (run after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-12}
source scripts/mpi_env.sh
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "[bench] installing Debian's python3-torch for the DDP reference"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-torch
fi
mkdir -p data runs
[ -s data/bench.txt ] || build/dstrain synth data/bench.txt --docs 6000 --seed 5 > /dev/null
run_dstrain() {
  rm -rf runs/bench-small
  mpirun -np 2 --bind-to none build/dstrain train bench/bench-small.yaml train.steps="$STEPS" 2> runs/bench-small.log
  python3 -c "
import json, statistics
rows = [json.loads(l) for l in open('runs/bench-small/metrics.jsonl')]
timed = rows[2:] if len(rows) > 4 else rows
print('%.1f' % statistics.median(r['tokens'] / r['step_time_s'] for r in timed))"
}
run_ddp() { /usr/bin/python3 bench/ddp_reference.py "$STEPS" | awk '/ddp_tokens_per_s/ {print $2}'; }
best() { python3 -c "import sys; print(max(float(x) for x in sys.argv[1:]))" "$@"; }
# Alternate the two twice and keep each one's best run: this machine's speed drifts over minutes.
D1=$(run_dstrain); P1=$(run_ddp); D2=$(run_dstrain); P2=$(run_ddp)
echo "[bench] dstrain runs: $D1 $D2; DDP runs: $P1 $P2"
DST=$(best "$D1" "$D2")
DDP=$(best "$P1" "$P2")
echo "bench-small (2 ranks x 1 thread, seq 256, micro-batch 4, fp32 AdamW, $STEPS steps, median)"
echo "  dstrain     tokens/s: $DST"
echo "  PyTorch DDP tokens/s: $DDP"
python3 -c "print('  ratio dstrain/DDP: %.3f' % ($DST / $DDP))"

#!/usr/bin/env bash
# bench-moe: DeepSeek-V3 MoE training (bench/bench-moe.yaml, 2 MPI ranks x 1 thread, dp2) against
# its dense twin (every layer a dense SwiGLU MLP of the same active parameters per token:
# intermediate_size = (experts per token + shared experts) x moe_intermediate_size). Prints
# tokens/s, MFU (active parameters) and peak RSS of each and the MoE/dense ratio; each run twice,
# alternating, best median kept (this machine's speed drifts).
# usage: bench/run_bench_moe.sh [steps]   (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-12}
source bench/bench_lib.sh

run() {  # run NAME ARGS...: prints "tokens_per_s mfu peak_rss_mb" (median after warm-up)
  local name=$1
  shift
  rm -rf "runs/bench-$name"
  mpirun -np 2 --bind-to none build/dstrain train bench/bench-moe.yaml train.steps="$STEPS" \
    train.output_dir="runs/bench-$name" "$@" 2> "runs/bench-$name.log"
  python3 -c "
import json, statistics
rows = [json.loads(l) for l in open('runs/bench-$name/metrics.jsonl') if '\"loss\"' in l]
timed = rows[2:] if len(rows) > 4 else rows
print('%.1f %.4f %.0f' % (statistics.median(r['tokens'] / r['step_time_s'] for r in timed),
                          statistics.median(r.get('mfu', 0) for r in timed),
                          max(r['peak_rss_mb'] for r in rows)))"
}
declare -A best
record() {  # record NAME "TPS MFU RSS"
  local tps=${2%% *}
  if [ -z "${best[$1]:-}" ] || python3 -c "import sys; sys.exit(0 if $tps > ${best[$1]%% *} else 1)"; then
    best[$1]=$2
  fi
  echo "[bench] $1: $2 (tokens/s, MFU, peak RSS MB)"
}
for round in 1 2; do
  record moe "$(run moe)"
  record dense "$(run dense model.first_k_dense_replace=4)"
done
python3 - "${best[moe]}" "${best[dense]}" <<'PY'
import sys
moe, dense = (list(map(float, a.split())) for a in sys.argv[1:])
print(f"moe_tokens_per_s {moe[0]:.1f} mfu {100 * moe[1]:.2f}% peak_rss_mb {moe[2]:.0f}")
print(f"dense_tokens_per_s {dense[0]:.1f} mfu {100 * dense[1]:.2f}% peak_rss_mb {dense[2]:.0f}")
print(f"moe_over_dense_tokens_per_s {moe[0] / dense[0]:.3f}")
PY

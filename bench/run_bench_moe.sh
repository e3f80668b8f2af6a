#!/usr/bin/env bash
# bench-moe: DeepSeek-V3 MoE training (bench/bench-moe.yaml, 2 MPI ranks x 1 thread, dp2) against
# its dense twin (every layer a dense SwiGLU MLP of the same active parameters per token:
# intermediate_size = (experts per token + shared experts) x moe_intermediate_size), and the same
# MoE with expert parallelism (ep2: each rank holds half the routed experts, tokens exchanged by
# all_to_all) against dp2 with every expert on both ranks. Prints tokens/s, MFU (active
# parameters), peak RSS and the planned model state per rank of each, and the MoE/dense and
# ep2/dp2 ratios; each run twice, alternating, best median kept (this machine's speed drifts).
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
state = 0.0
for line in open('runs/bench-$name.log'):  # the memory plan's model state, MiB
  if 'memory plan per rank' in line:
    import re
    units = {'B': 1 / 2**20, 'KiB': 1 / 1024, 'MiB': 1, 'GiB': 1024}
    for key in ('parameters', 'gradients', 'master weights', 'optimizer moments'):
      m = re.search(key + r' ([0-9.]+) (B|KiB|MiB|GiB)', line)
      state += float(m.group(1)) * units[m.group(2)]
print('%.1f %.4f %.0f %.1f' % (statistics.median(r['tokens'] / r['step_time_s'] for r in timed),
                               statistics.median(r.get('mfu', 0) for r in timed),
                               max(r['peak_rss_mb'] for r in rows), state))"
}
declare -A best
record() {  # record NAME "TPS MFU RSS STATE"
  local tps=${2%% *}
  if [ -z "${best[$1]:-}" ] || python3 -c "import sys; sys.exit(0 if $tps > ${best[$1]%% *} else 1)"; then
    best[$1]=$2
  fi
  echo "[bench] $1: $2 (tokens/s, MFU, peak RSS MB, planned model state MiB)"
}
for round in 1 2; do
  record moe "$(run moe)"
  record dense "$(run dense model.first_k_dense_replace=4)"
  record ep2 "$(run ep2 parallel.ep=2)"
done
python3 - "${best[moe]}" "${best[dense]}" "${best[ep2]}" <<'PY'
import sys
moe, dense, ep2 = (list(map(float, a.split())) for a in sys.argv[1:])
for name, r in (("moe", moe), ("dense", dense), ("moe_ep2", ep2)):
    print(f"{name}_tokens_per_s {r[0]:.1f} mfu {100 * r[1]:.2f}% peak_rss_mb {r[2]:.0f} "
          f"model_state_mib {r[3]:.1f}")
print(f"moe_over_dense_tokens_per_s {moe[0] / dense[0]:.3f}")
print(f"ep2_over_dp2_tokens_per_s {ep2[0] / moe[0]:.3f} model_state {ep2[3] / moe[3]:.3f} "
      f"peak_rss {ep2[2] / moe[2]:.3f}")
PY

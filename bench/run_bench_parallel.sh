#!/usr/bin/env bash
# bench-parallel: bench-small's model and global batch (8 sequences of 256 tokens) on 2 ranks x 1
# thread, split four ways in one invocation: dp2 (plain data parallel), tp2, pp2 with 1F1B
# (4 micro-batches of 2) and pp2 interleaved 1F1B (v=2, 4 micro-batches). Prints tokens/s and,
# for the pipelines, the measured bubble fraction of stage 0 (time waiting on the other stage /
# time computing) next to the schedule's (p-1)/m and (p-1)/(v*m).
# usage: bench/run_bench_parallel.sh [steps]   (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-10}
source scripts/mpi_env.sh
mkdir -p data runs
[ -s data/bench.txt ] || build/dstrain synth data/bench.txt --docs 6000 --seed 5 > /dev/null

# run NAME ARGS...: prints "tokens_per_s bubble_fraction" (medians over steps after warm-up).
run() {
  local name=$1
  shift
  rm -rf "runs/bench-$name"
  mpirun -np 2 --bind-to none build/dstrain train bench/bench-small.yaml train.steps="$STEPS" \
    train.output_dir="runs/bench-$name" "$@" 2> "runs/bench-$name.log"
  python3 -c "
import json, statistics
rows = [json.loads(l) for l in open('runs/bench-$name/metrics.jsonl') if '\"loss\"' in l]
timed = rows[2:] if len(rows) > 4 else rows
tps = statistics.median(r['tokens'] / r['step_time_s'] for r in timed)
bubble = statistics.median(r.get('pipeline_wait_s', 0) / (r['step_time_s'] - r.get('pipeline_wait_s', 0)) for r in timed)
print('%.1f %.3f' % (tps, bubble))"
}

dp2=$(run dp2 parallel.dp=2 train.micro_batch_size=4 train.grad_accum=1)
tp2=$(run tp2 parallel.dp=1 parallel.tp=2 train.micro_batch_size=8 train.grad_accum=1)
pp2=$(run pp2 parallel.dp=1 parallel.pp=2 parallel.schedule=1f1b train.micro_batch_size=2 \
  train.grad_accum=4)
pp2v=$(run pp2v2 parallel.dp=1 parallel.pp=2 parallel.schedule=interleaved_1f1b \
  parallel.virtual_stages=2 train.micro_batch_size=2 train.grad_accum=4)

echo "bench-parallel (bench-small model, global batch 8 x 256 tokens, 2 ranks x 1 thread, $STEPS steps)"
printf "  %-34s %10s %18s %12s\n" "layout" "tokens/s" "bubble measured" "schedule"
printf "  %-34s %10s %18s %12s\n" "dp2 (plain data parallel)" "${dp2% *}" "-" "-"
printf "  %-34s %10s %18s %12s\n" "tp2" "${tp2% *}" "-" "-"
printf "  %-34s %10s %18s %12s\n" "pp2 1F1B, m=4" "${pp2% *}" "${pp2#* }" "0.250"
printf "  %-34s %10s %18s %12s\n" "pp2 interleaved v=2, m=4" "${pp2v% *}" "${pp2v#* }" "0.125"

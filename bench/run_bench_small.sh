#!/usr/bin/env bash
# bench-small: the same model, global batch (8 sequences of 256 tokens) and 2 cores, five ways,
# in one invocation:
#   dstrain ZeRO-3        2 MPI ranks x 1 thread
#   dstrain DDP (stage 0) 2 MPI ranks x 1 thread
#   dstrain single        1 process x 2 threads
#   PyTorch DDP (gloo)    2 ranks x 1 thread  } PyTorch 2.11 from the project's virtual environment
#   PyTorch FSDP2 (gloo)  2 ranks x 1 thread  } (scripts/install_deps.sh), bench/torch_reference.py
# Prints tokens/s and peak RSS per rank of each, and the ratios. Each is run twice, alternating,
# and its best median kept: this machine's speed drifts over minutes.
# usage: bench/run_bench_small.sh [steps]   (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-12}
source bench/bench_lib.sh

# dstrain NAME NP ARGS...: prints "tokens_per_s peak_rss_mb" (median over steps after warm-up).
run_dstrain() {
  local name=$1 np=$2
  shift 2
  rm -rf "runs/bench-$name"
  mpirun -np "$np" --bind-to none build/dstrain train bench/bench-small.yaml train.steps="$STEPS" \
    train.output_dir="runs/bench-$name" "$@" 2> "runs/bench-$name.log"
  python3 -c "
import json, statistics
rows = [json.loads(l) for l in open('runs/bench-$name/metrics.jsonl') if '\"loss\"' in l]
timed = rows[2:] if len(rows) > 4 else rows
print('%.1f %.0f' % (statistics.median(r['tokens'] / r['step_time_s'] for r in timed),
                     max(r['peak_rss_mb'] for r in rows)))"
}
# run_torch MODE: PyTorch's run of the same model and batch, "tokens_per_s peak_rss_mb".
run_torch() {
  "$PYTHON" bench/torch_reference.py "$1" "$STEPS" 2> "runs/bench-torch-$1.log" |
    awk -v key="$1_tokens_per_s" '$1 == key {print $2, $3}'
}

declare -A best_tps best_rss
record() {  # record NAME "TPS RSS"
  local tps=${2% *} rss=${2#* }
  if [ -z "${best_tps[$1]:-}" ] || python3 -c "import sys; sys.exit(0 if $tps > ${best_tps[$1]} else 1)"; then
    best_tps[$1]=$tps
    best_rss[$1]=$rss
  fi
  echo "[bench] $1: $tps tokens/s, peak RSS $rss MB"
}
# The machine's fp32 matmul rate on 2 threads through both GEMMs of the library (libtorch's, the
# OpenBLAS PyTorch uses, and kernels::sgemm, oneDNN when built with it; bench/bench_gemm.cpp),
# measured between the training runs, the best kept (as for tokens/s): this machine's speed drifts.
cmake --build build --target dst_bench_gemm -j2 > /dev/null
LIBTORCH_RATES=() SGEMM_RATES=()
measure_gemm() {
  local out
  out=$(OMP_NUM_THREADS=2 build/dst_bench_gemm 2 1024)
  LIBTORCH_RATES+=("$(awk '/libtorch_gflops/ {print $2}' <<< "$out")")
  SGEMM_RATES+=("$(awk '/sgemm_gflops/ {print $2}' <<< "$out")")
  SGEMM_BACKEND=$(awk '/sgemm_gflops/ {print $3}' <<< "$out")
}
for round in 1 2; do
  measure_gemm
  record zero3 "$(run_dstrain zero3 2 parallel.zero_stage=3)"
  record ddp "$(run_dstrain ddp 2 parallel.zero_stage=0)"
  measure_gemm
  record single "$(run_dstrain single 1 parallel.dp=1 train.micro_batch_size=8 train.threads=2)"
  record torch_ddp "$(run_torch ddp)"
  record torch_fsdp2 "$(run_torch fsdp2)"
done
measure_gemm

echo "bench-small (vocab 4096, hidden 384, 6 layers, seq 256, global batch 8, fp32 AdamW, $STEPS steps)"
printf "  %-28s %10s %14s\n" "run" "tokens/s" "peak RSS/rank"
printf "  %-28s %10s %11s MB\n" "dstrain ZeRO-3 2x1" "${best_tps[zero3]}" "${best_rss[zero3]}"
printf "  %-28s %10s %11s MB\n" "dstrain DDP 2x1" "${best_tps[ddp]}" "${best_rss[ddp]}"
printf "  %-28s %10s %11s MB\n" "dstrain single 1x2 threads" "${best_tps[single]}" "${best_rss[single]}"
printf "  %-28s %10s %11s MB\n" "PyTorch DDP (gloo) 2x1" "${best_tps[torch_ddp]}" "${best_rss[torch_ddp]}"
printf "  %-28s %10s %11s MB\n" "PyTorch FSDP2 (gloo) 2x1" "${best_tps[torch_fsdp2]}" "${best_rss[torch_fsdp2]}"
best() { printf '%s\n' "$@" | sort -g | tail -1; }
MATMUL_GFLOPS=$(best "${LIBTORCH_RATES[@]}")
SGEMM_GFLOPS=$(best "${SGEMM_RATES[@]}")
echo "  matmul rates measured (GFLOP/s): libtorch ${LIBTORCH_RATES[*]}; sgemm ${SGEMM_RATES[*]}"
PARAMS=$(model_parameters runs/bench-zero3.log)
python3 - "${best_tps[zero3]}" "${best_tps[ddp]}" "${best_tps[single]}" "${best_tps[torch_ddp]}" \
  "${best_tps[torch_fsdp2]}" "$MATMUL_GFLOPS" "$SGEMM_GFLOPS" "$PARAMS" "$SGEMM_BACKEND" <<'PY'
import sys
zero3, ddp, single, torch_ddp, torch_fsdp2, matmul_gflops, sgemm_gflops, params = map(
    float, sys.argv[1:9])
backend = sys.argv[9]
model_gflops = 6 * params * zero3 / 1e9
print(f"  model FLOP/s of ZeRO-3 (6 x {params / 1e6:.1f} M params x tokens/s): {model_gflops:.1f} GFLOP/s")
print(f"  fp32 1024^3 matmul rate on 2 cores (best): libtorch {matmul_gflops:.1f} GFLOP/s,"
      f" kernels::sgemm {backend} {sgemm_gflops:.1f} GFLOP/s")
print(f"  ratio model FLOP/s / libtorch matmul rate:      {model_gflops / matmul_gflops:.3f}")
print(f"  ratio model FLOP/s / fastest GEMM's rate:       {model_gflops / max(matmul_gflops, sgemm_gflops):.3f}")
print(f"  ratio dstrain DDP / PyTorch DDP:    {ddp / torch_ddp:.3f}")
print(f"  ratio dstrain ZeRO-3 / PyTorch DDP: {zero3 / torch_ddp:.3f}")
print(f"  ratio dstrain ZeRO-3 / PyTorch FSDP2: {zero3 / torch_fsdp2:.3f}")
print(f"  ratio dstrain ZeRO-3 / single 2 threads: {zero3 / single:.3f}")
PY

#!/usr/bin/env bash
# bench-medium (~123M parameters, bench/bench-medium.yaml), in one invocation on 2 ranks x 1
# thread: dstrain ZeRO-0 and ZeRO-3 in fp32 and bf16, PyTorch 2.11 DDP and FSDP2 (fully_shard per
# block; bf16 as MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)) from the project's
# virtual environment (bench/torch_reference.py --preset medium). Prints tokens/s, peak RSS per
# rank, the memory plan's peak (planned_peak_rss_mb) and the ratios, with the machine's fp32 and
# bf16 matmul rates measured in the same run.
# PyTorch's bf16 runs need a CPU that multiplies bf16 natively (AVX512-BF16 / AMX): elsewhere
# libtorch's bf16 GEMM runs ~100x slower than fp32 and a step would take tens of minutes, so they
# are skipped with the measured rates printed.
# --scaling adds the scaling figure: ZeRO-0/1/2/3 on 1, 2 and 4 ranks (4 is oversubscribed on
# this 2-core machine) for 2 steps each: model-state bytes per rank (peak RSS minus the measured
# process baseline and the planned activations) against 16*Psi/N-style theory, and tokens/s per
# rank.
# usage: bench/run_bench_medium.sh [steps] [--scaling]   (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=6
SCALING=no
for arg in "$@"; do
  case $arg in
    --scaling) SCALING=yes ;;
    *) STEPS=$arg ;;
  esac
done
source bench/bench_lib.sh

# summarize RUN_DIR: "tokens_per_s peak_rss_max_mb planned_peak_mb baseline_mib activations_mib
# model_state_mib" (median tokens/s after the first step; the plan's figures from the log).
summarize() {
  python3 - "$1" << 'PY'
import json, re, statistics, sys
run = sys.argv[1]
rows = [json.loads(l) for l in open(run + "/metrics.jsonl") if '"loss"' in l]
timed = rows[1:] if len(rows) > 2 else rows
tps = statistics.median(r["tokens"] / r["step_time_s"] for r in timed)
peak = max(max(r.get("peak_rss_mb_per_rank") or [r["peak_rss_mb"]]) for r in rows)
planned = rows[-1].get("planned_peak_rss_mb", 0)
log = open(run + ".log").read()
def mib(text):
    value, unit = text.split()
    return float(value) * {"B": 2**-20, "KiB": 2**-10, "MiB": 1, "GiB": 1024}[unit]
def field(name):
    m = re.search(name + r" ~?([0-9.]+ [KMG]?i?B)", log)
    return mib(m.group(1)) if m else 0.0
state = sum(field(k) for k in ("parameters", "gradients", "master weights", "optimizer moments",
                               "reduce buffers"))
print("%.1f %.0f %.0f %.0f %.0f %.0f" % (tps, peak, planned, field("process baseline"),
                                          field("activations"), state))
PY
}
# dstrain NAME NP ARGS...
run_dstrain() {
  local name=$1 np=$2
  shift 2
  rm -rf "runs/medium-$name"
  mpirun -np "$np" --bind-to none build/dstrain train bench/bench-medium.yaml \
    train.steps="$STEPS" train.output_dir="runs/medium-$name" "$@" 2> "runs/medium-$name.log"
  summarize "runs/medium-$name"
}
run_torch() {  # MODE DTYPE -> "tokens_per_s peak_rss_mb"
  "$PYTHON" bench/torch_reference.py "$1" "$STEPS" --preset medium --dtype "$2" \
    2> "runs/medium-torch-$1-$2.log" | awk -v key="$1_tokens_per_s" '$1 == key {print $2, $3}'
}
matmul_rates() {  # "fp32_gflops bf16_gflops" of libtorch on one thread, 1024^3
  "$PYTHON" - << 'PY' 2> /dev/null
import time, torch
torch.set_num_threads(1)
rates = []
for dtype in (torch.float32, torch.bfloat16):
    a, b = torch.randn(1024, 1024).to(dtype), torch.randn(1024, 1024).to(dtype)
    a @ b
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 1.0:
        a @ b
        n += 1
    rates.append(2 * 1024**3 * n / (time.perf_counter() - start) / 1e9)
print("%.1f %.2f" % tuple(rates))
PY
}

RATES=$(matmul_rates)
FP32_RATE=${RATES% *}
BF16_RATE=${RATES#* }
declare -A R
R[zero0]=$(run_dstrain zero0 2 parallel.zero_stage=0)
R[zero3]=$(run_dstrain zero3 2 parallel.zero_stage=3)
R[zero0_bf16]=$(run_dstrain zero0_bf16 2 parallel.zero_stage=0 precision.param_dtype=bf16)
R[zero3_bf16]=$(run_dstrain zero3_bf16 2 parallel.zero_stage=3 precision.param_dtype=bf16)
R[torch_ddp]=$(run_torch ddp fp32)
R[torch_fsdp2]=$(run_torch fsdp2 fp32)
NATIVE_BF16=$(python3 -c "print('yes' if $BF16_RATE >= 0.5 * $FP32_RATE else 'no')")
if [ "$NATIVE_BF16" = yes ]; then
  R[torch_fsdp2_bf16]=$(run_torch fsdp2 bf16)
fi
RATES_AFTER=$(matmul_rates)
PARAMS=$(model_parameters runs/medium-zero3.log)

echo "bench-medium ($PARAMS parameters: vocab 24576, hidden 768, 12 layers, seq 512, global batch 2, AdamW, $STEPS steps, 2 ranks x 1 thread)"
echo "  libtorch 1024^3 matmul on one thread: fp32 $FP32_RATE GFLOP/s, bf16 $BF16_RATE GFLOP/s (after the runs: $RATES_AFTER)"
printf "  %-26s %10s %15s %15s\n" "run" "tokens/s" "peak RSS/rank" "plan's peak"
for name in zero0 zero3 zero0_bf16 zero3_bf16; do
  read -r tps peak planned _ <<< "${R[$name]}"
  printf "  %-26s %10s %12s MiB %12s MiB\n" "dstrain ${name/_/ }" "$tps" "$peak" "$planned"
done
for name in torch_ddp torch_fsdp2 torch_fsdp2_bf16; do
  if [ -n "${R[$name]:-}" ]; then
    read -r tps peak <<< "${R[$name]}"
    printf "  %-26s %10s %12s MiB\n" "PyTorch ${name#torch_}" "$tps" "$peak"
  fi
done
[ "$NATIVE_BF16" = yes ] ||
  echo "  PyTorch FSDP2 bf16: skipped (no bf16 matrix instructions: libtorch's bf16 GEMM runs at $BF16_RATE GFLOP/s)"
python3 - "$PARAMS" "$FP32_RATE" "$BF16_RATE" "${R[zero0]}" "${R[zero3]}" "${R[zero0_bf16]}" \
  "${R[zero3_bf16]}" "${R[torch_ddp]}" "${R[torch_fsdp2]}" "${R[torch_fsdp2_bf16]:-}" << 'PY'
import sys
params, fp32_rate, bf16_rate = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
z0, z3, z0b, z3b, tddp, tfsdp = ([float(x) for x in a.split()] for a in sys.argv[4:10])
tfsdp_bf16 = [float(x) for x in sys.argv[10].split()] if sys.argv[10] else None
print(f"  ratio ZeRO-3 / ZeRO-0 tokens/s (fp32):        {z3[0] / z0[0]:.3f}")
print(f"  ratio ZeRO-3 / PyTorch FSDP2 tokens/s (fp32): {z3[0] / tfsdp[0]:.3f}")
print(f"  ratio ZeRO-0 / PyTorch DDP tokens/s (fp32):   {z0[0] / tddp[0]:.3f}")
if tfsdp_bf16:
    print(f"  ratio ZeRO-3 bf16 / PyTorch FSDP2 bf16:       {z3b[0] / tfsdp_bf16[0]:.3f}")
print(f"  ratio ZeRO-3 bf16 / ZeRO-3 fp32 tokens/s:     {z3b[0] / z3[0]:.3f}")
for name, run in (("ZeRO-0", z0), ("ZeRO-3", z3), ("ZeRO-0 bf16", z0b), ("ZeRO-3 bf16", z3b)):
    print(f"  {name:12s} peak RSS / plan's peak: {run[1] / run[2]:.3f}")
saved, planned = z0[1] - z3[1], z0[2] - z3[2]
print(f"  ZeRO-3 saves {saved:.0f} MiB of peak RSS against ZeRO-0; the plans say {planned:.0f}: {saved / planned:.0%}")
mf = 6 * params * z3[0] / 1e9
mfb = 6 * params * z3b[0] / 1e9
print(f"  model FLOP/s ZeRO-3 fp32: {mf:.1f} GFLOP/s = {mf / (2 * fp32_rate):.3f} x the fp32 matmul rate of 2 cores")
print(f"  model FLOP/s ZeRO-3 bf16: {mfb:.1f} GFLOP/s = {mfb / (2 * max(bf16_rate, fp32_rate)):.3f} x the faster matmul rate of 2 cores")
PY

if [ "$SCALING" = yes ]; then
  echo "scaling (bench-medium, 2 steps each; model state = peak RSS - process baseline - planned activations):"
  printf "  %-8s %5s %16s %14s %14s %14s\n" "stage" "ranks" "model state/rank" "plan's held" "theory" "tokens/s/rank"
  for np in 1 2 4; do
    for stage in 0 1 2 3; do
      out=$(STEPS=2 run_dstrain "scale-z$stage-np$np" "$np" parallel.dp="$np" \
        parallel.zero_stage="$stage")
      read -r tps peak _ baseline activations state <<< "$out"
      python3 - "$PARAMS" "$np" "$stage" "$tps" "$peak" "$baseline" "$activations" "$state" << 'PY'
import sys
psi, n, stage = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tps, peak, baseline, activations, state = map(float, sys.argv[4:9])
# fp32 AdamW: 4 B parameters + 4 B gradients + 8 B moments per parameter (ZeRO paper's K = 8).
theory = {0: 16 * psi, 1: 8 * psi + 8 * psi / n, 2: 4 * psi + 12 * psi / n, 3: 16 * psi / n}[stage]
if n == 1:
    theory = 16 * psi
mib = 2**20
over = " (oversubscribed: 4 ranks on 2 cores)" if n > 2 else ""
print(f"  ZeRO-{stage:<3d} {n:5d} {peak - baseline - activations:13.0f} MiB {state:10.0f} MiB "
      f"{theory / mib:10.0f} MiB {tps / n:14.1f}{over}")
PY
    done
  done
fi

#!/usr/bin/env bash
# The DP-SGD measurement of docs/privacy.md: a LoRA fine-tune of the quickstart-size model on War
# and Peace at epsilon 8 and 1 (delta 1e-5) against the same run without DP — final eval loss of
# each and the tokens/s cost of per-example clipping (ratio against the run without DP, same
# invocation). The base is the quickstart model trained on the synthetic corpus.
# usage: bench/run_privacy_measurement.sh [STEPS] (from the repository root, after a build)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-150}
SHARED=${DST_SHARED_DATA:-$(cd .. && pwd)/shared/data}
WORK=${DST_BENCH_DIR:-/tmp/dst_privacy_bench}
source scripts/mpi_env.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
DSTRAIN=$PWD/build/dstrain
mkdir -p "$WORK" && cd "$WORK"
if [ ! -f base/hf/config.json ]; then
  "$DSTRAIN" synth synth.txt --docs 20000 --seed 1 > /dev/null
  mpirun -np 2 --bind-to none "$DSTRAIN" train "$OLDPWD/configs/quickstart.yaml" \
    data.train_path=synth.txt train.output_dir=base train.steps=300 checkpoint.at_end=true \
    > base.log 2>&1 || { tail base.log; exit 1; }
  "$DSTRAIN" ckpt convert "base/checkpoints/$(cat base/checkpoints/latest)" --to hf base/hf
fi
run() {  # NAME EXTRA_ARGS...
  local name=$1
  shift
  mpirun -np 2 --bind-to none "$DSTRAIN" train "$OLDPWD/configs/private_lora.yaml" \
    model.hf_config="$WORK/base/hf/config.json" train.init_from="$WORK/base/hf" "data.prepared=''" \
    data.train_path="$SHARED/corpus/war-and-peace.txt" data.val_fraction=0.02 \
    train.steps="$STEPS" train.eval_every=0 train.output_dir="$name" train.progress=lines \
    train.log_every=25 "$@" > "$name.log" 2>&1 || { tail "$name.log"; exit 1; }
  python3 - "$name" <<'PY'
import json, sys
name = sys.argv[1]
rows = [json.loads(l) for l in open(f"{name}/metrics.jsonl")]
steps = [r for r in rows if "loss" in r]
evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
tps = sum(r["tokens"] for r in steps[5:]) / sum(r["step_time_s"] for r in steps[5:])
eps = steps[-1].get("epsilon")
sigma = steps[-1].get("noise_multiplier")
print(f"{name}: eval loss {evals[0]:.4f} -> {evals[-1]:.4f}, {tps:.0f} tokens/s"
      + (f", epsilon {eps:.3f}, noise multiplier {sigma:.3f}" if eps is not None else ""))
open(f"{name}.tps", "w").write(str(tps))
PY
}
run no_dp privacy.target_epsilon=0 privacy.max_grad_norm=0
run eps8 privacy.target_epsilon=8
run eps1 privacy.target_epsilon=1
python3 - <<'PY'
base = float(open("no_dp.tps").read())
for name in ("eps8", "eps1"):
    print(f"{name}: tokens/s {float(open(name + '.tps').read()) / base:.2f}x of the run without DP")
PY

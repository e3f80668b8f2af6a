#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a trained model: installs packages, builds,
# writes the synthetic corpus and trains the quickstart recipe on 2 MPI ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
source scripts/mpi_env.sh
mkdir -p data
build/dstrain synth data/quickstart.txt --docs 20000 --seed 1
mpirun -np 2 --bind-to none build/dstrain train configs/quickstart.yaml "$@"
python3 - <<'PY'
import json
records = [json.loads(line) for line in open("runs/quickstart/metrics.jsonl")]
evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
(first_step, first), (last_step, last) = evals[0], evals[-1]
print(f"[quickstart] eval loss {first:.3f} (step {first_step}) -> {last:.3f} (step {last_step}): "
      f"{first - last:.2f} nats lower")
PY
echo "[quickstart] model.h5, config.json, recipe.yaml and metrics.jsonl are in runs/quickstart/"

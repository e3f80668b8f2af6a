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
echo "[quickstart] weights, config.json, recipe.yaml and metrics.jsonl are in runs/quickstart/"

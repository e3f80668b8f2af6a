# Sourced by the bench scripts (from the repository root): MPI as root, the project's venv python
# with torch (PYTHON), the data/ and runs/ folders and the synthetic corpus data/bench.txt, and
# model_parameters LOG (the parameter count a dstrain log reports).
source scripts/mpi_env.sh
PYTHON=.venv/bin/python
"$PYTHON" -c "import torch" 2> /dev/null ||
  { echo "$(basename "$0"): no torch in .venv: run scripts/install_deps.sh first" >&2; exit 1; }
mkdir -p data runs
[ -s data/bench.txt ] || build/dstrain synth data/bench.txt --docs 6000 --seed 5 > /dev/null
# "model: llama, 122702592 parameters, ..." -> 122702592
model_parameters() { grep -o -m1 "[0-9][0-9]* parameters" "$1" | awk '{print $1}'; }

#!/usr/bin/env bash
# Configures and builds deepseek_train (Release) into ${BUILD_DIR:-build} with ${JOBS:-2} jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}
# libtorch from the project's virtual environment (scripts/install_deps.sh): its folder first on
# the prefix path, so no other libtorch on the system is picked up.
TORCH_DIR=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2> /dev/null) ||
  { echo "build.sh: no torch in .venv: run scripts/install_deps.sh first" >&2; exit 1; }
# The CUDA toolkit (nvcc, NCCL headers) when present: CUDA sources compile and link here too.
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=$PATH:/usr/local/cuda/bin; fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} \
  "-DCMAKE_PREFIX_PATH=$TORCH_DIR;$TORCH_DIR/share/cmake" "$@"
cmake --build "$BUILD_DIR" -j "$JOBS"

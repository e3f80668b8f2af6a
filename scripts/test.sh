#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a passing test suite: installs packages, builds,
# and runs every CTest test (unit, multi-process under mpirun, end-to-end). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
source scripts/mpi_env.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 "$@"

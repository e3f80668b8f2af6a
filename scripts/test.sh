#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a passing test suite: installs packages, builds,
# and runs every CTest test (unit, multi-process under mpirun, end-to-end). CI runs exactly this.
# A test CTest reports as skipped or not run fails the suite, as a failing test does: every test
# must run here (scripts/install_deps.sh installs what they need).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
source scripts/mpi_env.sh
SOURCE_DIR=$(pwd)
# The source tree as git sees it (untracked files included, ignored ones not): tests write only
# under the build folder and temporary directories, so the run must leave this unchanged.
tree_state() {
  git -C "$SOURCE_DIR" status --porcelain --untracked-files=all 2> /dev/null | sort || true
}
tree_before=$(tree_state)
cd "${BUILD_DIR:-build}"
log=$(mktemp "${TMPDIR:-/tmp}/dstrain-ctest.XXXXXX")
trap 'rm -f "$log"' EXIT
rc=0
# GPU tests (label gpu) need a CUDA device: without one they are left out, and said so (they run
# in scripts/device_check.sh on a machine with a GPU).
gpu_filter=()
if ! nvidia-smi -L > /dev/null 2>&1; then
  gpu_filter=(-LE gpu)
  echo "scripts/test.sh: no GPU here: the tests labelled gpu are left out (scripts/device_check.sh runs them)"
fi
ctest --output-on-failure --no-tests=error --timeout 900 "${gpu_filter[@]}" "$@" 2>&1 | tee "$log" || rc=$?
[ "$rc" -eq 0 ] || exit "$rc"
# A test CTest skipped or did not run: its result line ("***Skipped", "***Not Run") or its entry
# in "The following tests did not run:".
not_run=$({
  grep -E 'Test +#[0-9]+: .*\*\*\*(Skipped|Not Run)' "$log" |
    sed -E 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/' || true
  sed -n '/^The following tests did not run:/,/^$/p' "$log" |
    sed -nE 's/^[[:space:]]+[0-9]+ - ([^ ]+).*/\1/p' || true
} | sort -u | paste -sd ' ')
if [ -n "$not_run" ] || grep -q '^The following tests did not run:' "$log"; then
  echo "scripts/test.sh: FAIL: skipped or not run (every test must run): ${not_run:-see above}"
  grep -E '^[0-9]+% tests passed' "$log" | tail -1 || true  # CTest's summary stays the last line
  exit 1
fi
left=$(comm -13 <(echo "$tree_before") <(tree_state) | paste -sd ' ')
if [ -n "$left" ]; then
  echo "scripts/test.sh: FAIL: the tests changed the source tree: $left"
  grep -E '^[0-9]+% tests passed' "$log" | tail -1 || true
  exit 1
fi

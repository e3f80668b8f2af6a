# shellcheck shell=bash
# Helpers shared by the shell tests (tests/cli, tests/slurm): source it, do not run it.
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# fail MESSAGE: one "FAIL:" line, exit 1.
fail() {
  echo "FAIL: $*"
  exit 1
}

# in_ci: true under CI (CI=true, as CI services and .ci/run set it).
in_ci() {
  case "${CI:-}" in
    "" | false | 0 | no) return 1 ;;
  esac
  return 0
}

# skip_or_fail REASON: a tool the test needs is missing (scripts/install_deps.sh installs it).
# Outside CI the test is skipped (exit 77, CTest's SKIP_RETURN_CODE); under CI that is a failure.
skip_or_fail() {
  if in_ci; then
    echo "FAIL: $* (a missing tool fails under CI=$CI; scripts/install_deps.sh installs it)"
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}

# check_error [--ranks N] EXIT PATTERN COMMAND...: runs COMMAND (under a hang guard), stdout to
# out.log and stderr to err.log, and checks that
#   - it exits with EXIT exactly (dstrain: 1 runtime error, 2 bad input) - not 0, not a signal;
#   - stderr has exactly one "dstrain: error:" line (--ranks N, an MPI job of N ranks whose ranks
#     may each name themselves: 1 to N lines), and every one of them matches PATTERN (grep);
#   - nothing on stderr says the process crashed.
# Prints "ok (error): LINE" and returns 0, or prints "FAIL: why", the stderr, and returns 1.
check_error() {
  local max_lines=1
  if [ "$1" = --ranks ]; then
    max_lines=$2
    shift 2
  fi
  local want_exit=$1 pattern=$2 rc=0 lines why=""
  shift 2
  timeout 300 "$@" > out.log 2> err.log || rc=$?
  lines=$(grep -c '^dstrain: error:' err.log || true)
  if [ "$rc" -ne "$want_exit" ]; then
    why="exit $rc, expected $want_exit"
  elif [ "$lines" -lt 1 ] || [ "$lines" -gt "$max_lines" ]; then
    why="$lines 'dstrain: error:' lines on stderr, expected $([ "$max_lines" = 1 ] && echo 1 || echo "1 to $max_lines")"
  elif grep '^dstrain: error:' err.log | grep -qv -- "$pattern"; then
    why="an error line does not match '$pattern'"
  elif grep -qi 'terminate called\|segmentation fault\|core dumped\|stack trace' err.log; then
    why="crashed"
  fi
  if [ -n "$why" ]; then
    echo "FAIL: $why: $*"
    sed 's/^/  stderr: /' err.log
    return 1
  fi
  echo "ok (error): $(grep '^dstrain: error:' err.log | head -1)"
}

# expect_error [--ranks N] EXIT PATTERN COMMAND...: check_error, exit 1 on a mismatch.
expect_error() {
  check_error "$@" || exit 1
}

# interop_begin SOURCE_DIR WORKDIR MODULES...: for the interop tests (tests/interop): sets PY to
# the project's virtual environment's python, skips (or, under CI, fails) when it cannot import
# MODULES (comma-separated, as Python's import statement takes them), and enters a fresh WORKDIR.
interop_begin() {
  local src=$1 work=$2 modules=$3
  PY=$src/.venv/bin/python
  "$PY" -c "import $modules" 2> /dev/null ||
    skip_or_fail "$modules not in $src/.venv (scripts/install_deps.sh)"
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
}

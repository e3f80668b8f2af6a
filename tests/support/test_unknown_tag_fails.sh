#!/usr/bin/env bash
# A Catch2 tag filter that matches no test must fail its CTest entry (CTest runs every Catch2
# binary with -w NoTests), so a renamed or misspelled tag cannot leave a green entry that runs
# nothing. The unit binary exits 2; the MPI binary folds any failure into 1.
# usage: test_unknown_tag_fails.sh UNIT_TESTS MPIEXEC MPI_TESTS
set -uo pipefail
UNIT=$1
MPIEXEC=$2
MPI_TESTS=$3
check() {
  local what=$1
  shift
  local out code
  out=$("$@" '[no_such_tag]' -w NoTests 2>&1)
  code=$?
  [ "$code" -ne 0 ] || { echo "FAIL: $what exited 0 for a tag matching no test"; exit 1; }
  grep -q "No test cases matched '\[no_such_tag\]'" <<< "$out" ||
    { echo "$out"; echo "FAIL: $what did not report the unmatched filter"; exit 1; }
  echo "ok: $what exits $code for a filter that matches no test"
}
check "unit tests" "$UNIT"
check "mpi tests" "$MPIEXEC" -np 1 "$MPI_TESTS"
# The same flags with a filter that matches still pass.
"$UNIT" '[core]' -w NoTests > /dev/null || { echo "FAIL: [core] with -w NoTests did not pass"; exit 1; }
echo "ok: a matching filter passes"

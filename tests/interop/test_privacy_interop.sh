#!/usr/bin/env bash
# `dstrain privacy` (privacy/rdp_accountant.h) against Opacus's RDP accountant
# (tests/interop/privacy_reference.py): epsilon and the best order for (q, sigma, steps, delta)
# over small and large sample rates, noise multipliers and step counts, within 1e-6 relative; the
# noise multiplier for a target epsilon, within 1e-6 relative (the same bisection).
# usage: test_privacy_interop.sh DSTRAIN WORKDIR SOURCE_DIR
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
source "$SRC/tests/cli/lib.sh"
interop_begin "$SRC" "$WORK" "opacus"
ref() { "$PY" "$SRC/tests/interop/privacy_reference.py" "$@"; }
field() { awk -v key="$1" '{for (i = 1; i < NF; i++) if ($i == key) print $(i + 1)}'; }
close() {  # close OURS THEIRS WHAT: relative difference within 1e-6
  "$PY" -c "import sys; a, b = float('$1'), float('$2'); sys.exit(0 if abs(a - b) <= 1e-6 * abs(b) else 1)" ||
    fail "$3: ours $1, opacus $2"
}
cases=0
# q, sigma, steps, delta: DP-SGD's usual range (q 1e-3..0.1, sigma 0.5..4), and the extremes.
for spec in "0.01 1.1 1000 1e-5" "0.004 0.8 5000 1e-5" "0.1 2.0 200 1e-6" "0.001 4.0 100000 1e-5" \
  "0.05 0.6 300 1e-5" "0.5 1.5 10 1e-3" "1.0 3.0 50 1e-5" "0.02 10.0 1 1e-5"; do
  read -r q sigma steps delta <<< "$spec"
  ours=$("$DSTRAIN" privacy --sample-rate "$q" --noise-multiplier "$sigma" --steps "$steps" --delta "$delta")
  read -r eps order <<< "$(ref epsilon "$q" "$sigma" "$steps" "$delta")"
  close "$(echo "$ours" | field epsilon)" "$eps" "epsilon of q=$q sigma=$sigma steps=$steps"
  close "$(echo "$ours" | field order)" "$order" "order of q=$q sigma=$sigma steps=$steps"
  cases=$((cases + 1))
done
# The noise multiplier for a target epsilon (the issue's budgets: epsilon 8 and 1).
for spec in "0.01 8 1000 1e-5" "0.01 1 1000 1e-5" "0.004 3 2500 1e-5"; do
  read -r q target steps delta <<< "$spec"
  ours=$("$DSTRAIN" privacy --sample-rate "$q" --target-epsilon "$target" --steps "$steps" --delta "$delta")
  close "$(echo "$ours" | field noise_multiplier)" "$(ref sigma "$q" "$target" "$steps" "$delta")" \
    "noise multiplier for epsilon $target (q=$q, steps=$steps)"
  cases=$((cases + 1))
done
# Bad input: one line, exit 2.
set +e
msg=$("$DSTRAIN" privacy --sample-rate 1.5 --noise-multiplier 1 --steps 10 2>&1)
code=$?
set -e
[ "$code" = 2 ] && [ "$(echo "$msg" | wc -l)" = 1 ] && echo "$msg" | grep -q "sample rate must be in \[0, 1\], got 1.5" ||
  fail "bad sample rate: exit $code, '$msg'"
echo "privacy interop: $cases cases equal Opacus's RDP accountant"

#!/usr/bin/env bash
# scripts/plot_metrics.py: loss.png and throughput.png from a synthetic metrics.jsonl (valid PNGs),
# and one "plot_metrics: error:" line naming the file and line, exit 2, for bad input.
# usage: test_plot_metrics.sh [SOURCE_DIR] [WORKDIR]. Without matplotlib: exit 77 (skipped), or
# a failure under CI (CI=true), where scripts/install_deps.sh has installed python3-matplotlib.
set -uo pipefail
SOURCE_DIR=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
WORK=${2:-$(mktemp -d)}
SCRIPT=$SOURCE_DIR/scripts/plot_metrics.py
PYTHON=/usr/bin/python3
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # skip_or_fail
if ! "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
  skip_or_fail "$PYTHON has no matplotlib (apt-get install python3-matplotlib)"
fi
rm -rf "$WORK" && mkdir -p "$WORK/run" && cd "$WORK" || exit 1
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }  # counted: every check runs

is_png() { [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; }

# A small run as MetricsWriter writes it: the step-0 eval row, steps with mfu, an eval at step 5,
# a non-finite loss written as null.
{
  echo '{"step":0,"eval_loss":5.5,"eval_perplexity":244.69}'
  for s in 1 2 3 4 5 6 7 8; do
    loss=$(awk "BEGIN{print 5.5 - 0.3 * $s}")
    extra=""
    [ "$s" -eq 5 ] && extra=',"eval_loss":4.2,"eval_perplexity":66.7'
    [ "$s" -eq 7 ] && loss=null
    echo "{\"step\":$s,\"loss\":$loss,\"lr\":0.001,\"grad_norm\":0.9,\"tokens\":2048,\"tokens_per_s\":$((10000 + s * 100)),\"step_time_s\":0.2,\"comm_bytes\":0,\"comm_wait_s\":0.0,\"peak_rss_mb\":300.0,\"loss_scale\":1.0,\"skipped\":false,\"skipped_steps\":0,\"mfu\":0.$((20 + s))$extra}"
  done
} > run/metrics.jsonl

# A run directory: PNGs beside metrics.jsonl.
out=$("$PYTHON" "$SCRIPT" run 2>&1); rc=$?
[ "$rc" -eq 0 ] || fail "run dir: exit $rc: $out"
for png in run/loss.png run/throughput.png; do is_png "$png" || fail "run dir: $png missing or not a PNG"; done
[ "$rc" -eq 0 ] && echo "ok   run dir -> run/loss.png, run/throughput.png"

# A file and --out; executable with its own shebang.
out=$("$SCRIPT" run/metrics.jsonl --out plots 2>&1); rc=$?
[ "$rc" -eq 0 ] || fail "--out: exit $rc: $out"
for png in plots/loss.png plots/throughput.png; do is_png "$png" || fail "--out: $png missing or not a PNG"; done
[ "$rc" -eq 0 ] && echo "ok   file --out plots"

# Without mfu (older runs): still both plots.
grep -v '"step":0' run/metrics.jsonl | sed 's/,"mfu":[0-9.]*//' > no_mfu.jsonl
out=$("$PYTHON" "$SCRIPT" no_mfu.jsonl --out no_mfu 2>&1); rc=$?
{ [ "$rc" -eq 0 ] && is_png no_mfu/throughput.png && is_png no_mfu/loss.png; } || fail "no mfu: exit $rc: $out"
[ "$rc" -eq 0 ] && echo "ok   without mfu"

# expect_error NAME PATTERN ARGS...: exit 2, exactly one stderr line, "plot_metrics: error:" + PATTERN.
expect_error() {
  local name=$1 pattern=$2
  shift 2
  local err rc lines
  err=$("$PYTHON" "$SCRIPT" "$@" 2>&1 >/dev/null); rc=$?
  lines=$(printf '%s\n' "$err" | grep -c .)
  if [ "$rc" -ne 2 ]; then fail "$name: exit $rc, expected 2: $err"; return; fi
  if [ "$lines" -ne 1 ]; then fail "$name: $lines stderr lines, expected 1: $err"; return; fi
  if ! printf '%s\n' "$err" | grep -q -- "^plot_metrics: error: .*$pattern"; then
    fail "$name: '$err' does not match '$pattern'"; return
  fi
  echo "ok   $name: $err"
}

{ head -n 2 run/metrics.jsonl; echo '{"step":2,"loss":'; tail -n 3 run/metrics.jsonl; } > malformed.jsonl
expect_error "malformed line" "malformed.jsonl:3: malformed JSON" malformed.jsonl --out bad
{ head -n 2 run/metrics.jsonl; echo '{"loss":1.0}'; } > no_step.jsonl
expect_error "missing step" "no_step.jsonl:3: missing or non-integer 'step'" no_step.jsonl --out bad
{ head -n 2 run/metrics.jsonl; echo '{"step":2,"loss":"high"}'; } > bad_value.jsonl
expect_error "non-numeric loss" "bad_value.jsonl:3: 'loss' is not a number" bad_value.jsonl --out bad
: > empty.jsonl
expect_error "empty file" "empty.jsonl: no metrics records" empty.jsonl --out bad
expect_error "missing file" "missing.jsonl: no such file" missing.jsonl --out bad
mkdir -p empty_run
expect_error "run dir without metrics" "empty_run/metrics.jsonl: no such file" empty_run
[ ! -e bad/loss.png ] || fail "a PNG was written for bad input"

# A run still being written: an incomplete last line is skipped with a warning.
{ cat run/metrics.jsonl; printf '{"step":9,"lo'; } > partial.jsonl
out=$("$PYTHON" "$SCRIPT" partial.jsonl --out partial 2>&1); rc=$?
{ [ "$rc" -eq 0 ] && is_png partial/loss.png && printf '%s\n' "$out" | grep -q "partial.jsonl:10: incomplete last line"; } \
  || fail "partial last line: exit $rc: $out"
[ "$rc" -eq 0 ] && echo "ok   incomplete last line skipped"

if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "all plot_metrics checks passed"

#!/usr/bin/env bash
# scripts/launch_mpirun.sh: a hostfile of this machine trains on 2 ranks; a host that does not
# resolve, a host that does not answer and a malformed line are one-line errors naming the
# hostfile and line, exit 2, and never a hang.
# usage: test_launch.sh DSTRAIN WORKDIR SOURCE_DIR
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
fail() { echo "FAIL: $*"; exit 1; }
export DSTRAIN DST_SSH_TIMEOUT=3
LAUNCH=(timeout 60 bash "$SRC/scripts/launch_mpirun.sh")

"$DSTRAIN" synth corpus.txt --docs 300 --seed 2 > /dev/null
TRAIN=(train "$SRC/configs/quickstart.yaml" data.train_path=corpus.txt train.steps=3
  train.eval_every=0 train.eval_batches=1 data.seq_len=32 model.hidden_size=32
  model.intermediate_size=64 model.num_hidden_layers=2 train.micro_batch_size=2
  train.peak_flops_per_rank=1e9 checkpoint.at_end=false)

printf "# this machine\nlocalhost slots=2\n" > local.hosts
"${LAUNCH[@]}" -np 2 --hostfile local.hosts -- "${TRAIN[@]}" train.output_dir=run > run.log 2>&1 ||
  { cat run.log; fail "2 ranks from a hostfile"; }
grep -q "world_size=2" run.log || fail "not 2 ranks"
echo "ok: 2 ranks from a hostfile of this machine"

# expect_error NAME PATTERN HOSTFILE_CONTENT
expect_error() {
  printf "%b" "$3" > "$1.hosts"
  set +e
  "${LAUNCH[@]}" -np 2 --hostfile "$1.hosts" -- "${TRAIN[@]}" train.output_dir=x > "$1.log" 2>&1
  local code=$?
  set -e
  [ $code -eq 2 ] || { cat "$1.log"; fail "$1: exit $code, expected 2"; }
  [ "$(wc -l < "$1.log")" -eq 1 ] || { cat "$1.log"; fail "$1: more than one line"; }
  grep -q "^launch_mpirun: error: .*$2" "$1.log" || { cat "$1.log"; fail "$1: message"; }
  echo "ok $1: $(cat "$1.log")"
}
expect_error unresolvable "unresolvable.hosts:2: host 'no-such-host.invalid' cannot be resolved" \
  "localhost slots=1\nno-such-host.invalid slots=1\n"
# A documentation address (TEST-NET-1, RFC 5737): routed nowhere, so nothing answers.
expect_error unreachable "unreachable.hosts:1: host '192.0.2.1' is unreachable" "192.0.2.1 slots=1\n"
expect_error malformed "malformed.hosts:1: unknown option 'cpus=4' for host 'localhost'" \
  "localhost cpus=4\n"
expect_error empty "empty.hosts: no hosts listed" "# nothing\n"
echo "launch: all checks passed"

#!/usr/bin/env bash
# End-to-end through Slurm: a private single-node Slurm (scripts/slurm/start_local_slurm.sh) runs
# scripts/slurm/train.sbatch three times on a synthetic corpus, 2 tasks on the one node:
#   1. srun --mpi=pmix, 10 steps, checkpoints every 5: two ranks train, checkpoints are written;
#   2. the same OUT submitted again with 20 steps, LAUNCHER=mpirun (mpirun inside the
#      allocation): the template adds --resume latest, training continues from step 10 to 20;
#   3. a real requeue: the first attempt stops after its step-5 checkpoint and then idles, as a
#      long run would when pre-empted; `scontrol requeue` puts it back in the queue and the second
#      attempt (same job id, SLURM_RESTART_COUNT=1) resumes from step 5 and reaches step 10;
#   4. rank 1 dies at start-up: srun --kill-on-bad-exit=1 ends rank 0 too, the job fails at once.
# The daemons are stopped on every exit. Every wait is bounded; the whole test takes well under
# 3 minutes once slurm-wlm and munge are installed (the first run installs them with apt-get).
# Exit 77 (skip) when Slurm is not installed and cannot be installed here; under CI (CI=true),
# where scripts/install_deps.sh installs slurm-wlm and munge, that is a failure instead.
# usage: test_slurm_sbatch.sh DSTRAIN WORKDIR SOURCE_DIR
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: test_slurm_sbatch.sh DSTRAIN WORKDIR SOURCE_DIR" >&2; exit 2; }
DSTRAIN=$(realpath "$1")
WORK=$2
SRC=$(realpath "$3")
SLURM_SCRIPTS=$SRC/scripts/slurm
START=$SECONDS
[ -x "$DSTRAIN" ] || { echo "FAIL: no dstrain binary at $1"; exit 1; }
export PATH=$PATH:/usr/sbin:/sbin
source "$SRC/tests/cli/lib.sh"  # skip_or_fail (fail is redefined below, once the logs exist)

# A test started inside a Slurm job must not hand that job's variables to its own jobs.
while read -r var; do [ "$var" = SLURM_CONF ] || unset "$var"; done < <(compgen -e | grep '^SLURM_' || true)

# Daemons of an earlier, killed run of this test: stop them before their directory goes away.
if [ -s "$WORK/slurm_dir" ]; then "$SLURM_SCRIPTS/stop_local_slurm.sh" "$(cat "$WORK/slurm_dir")" --purge || true; fi
rm -rf "$WORK" && mkdir -p "$WORK"
WORK=$(realpath "$WORK")
cd "$WORK"

# The Slurm directory holds munge's socket, whose path must stay short (108 bytes): use /tmp.
SLURM_DIR=$(mktemp -d /tmp/dstrain-slurm.XXXXXX)
echo "$SLURM_DIR" >"$WORK/slurm_dir"
cleanup() {
  local rc=$?
  trap "" INT TERM  # finish the clean-up even when signalled again
  trap - EXIT
  "$SLURM_SCRIPTS/stop_local_slurm.sh" "$SLURM_DIR" || true
  # Keep the daemons' logs next to the job logs for a failed run; drop the rest.
  if [ "$rc" -ne 0 ] && [ -d "$SLURM_DIR/log" ]; then cp -r "$SLURM_DIR/log" "$WORK/slurm-logs" || true; fi
  rm -rf "$SLURM_DIR"
  echo "test_slurm_sbatch: finished in $((SECONDS - START))s with status $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    skip_or_fail "slurm-wlm/munge are not installed and cannot be installed (not root or no apt-get)"
  fi
fi
# At least 2 CPUs for 2 tasks x 1 cpu, even on a 1-core machine.
LOCAL_SLURM_CPUS=$(nproc)
[ "$LOCAL_SLURM_CPUS" -ge 2 ] || LOCAL_SLURM_CPUS=2
export LOCAL_SLURM_CPUS
if ! timeout 900 "$SLURM_SCRIPTS/start_local_slurm.sh" "$SLURM_DIR"; then
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    skip_or_fail "slurm-wlm/munge could not be installed"
  fi
  echo "FAIL: local Slurm did not start"
  exit 1
fi
export SLURM_CONF=$SLURM_DIR/slurm.conf
echo "test_slurm_sbatch: Slurm up after $((SECONDS - START))s"

"$DSTRAIN" synth corpus.txt --docs 3000 --seed 3 >/dev/null

TINY=("data.train_path=$WORK/corpus.txt" train.eval_every=5 train.log_every=5
  train.micro_batch_size=4 data.seq_len=64 model.hidden_size=64 model.intermediate_size=128
  model.num_hidden_layers=2 schedule.warmup_steps=2 checkpoint.every_steps=5)

fail() {
  echo "FAIL: $*"
  for log in "$WORK"/job-*.out; do [ -f "$log" ] && { echo "--- $log"; cat "$log"; }; done
  exit 1
}

job_field() {  # job_field JOBID FIELD -> value from scontrol show job
  timeout 10 scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | grep "^$2=" | head -1 | cut -d= -f2-
}

# wait_state JOBID SECONDS STATE...: until the job is in one of STATEs; fails on a timeout or on a
# final state that is not one of them.
wait_state() {
  local job=$1 limit=$2 state=""
  shift 2
  local deadline=$((SECONDS + limit))
  while [ $SECONDS -lt $deadline ]; do
    state=$(job_field "$job" JobState)
    for want in "$@"; do [ "$state" = "$want" ] && return 0; done
    case "$state" in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED)
        timeout 10 scontrol show job "$job" || true
        fail "job $job ended $state while waiting for $*" ;;
    esac
    sleep 0.5
  done
  timeout 10 scontrol show job "$job" || true
  timeout 10 squeue || true
  timeout 10 sinfo || true
  timeout 30 scancel "$job" || true
  fail "job $job still ${state:-unknown} after ${limit}s (waiting for $*)"
}

# submit NAME VAR=VALUE... -- OVERRIDES...: sbatch the template, 2 tasks on the one node.
submit() {
  local name=$1
  shift
  local vars=()
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  env "${vars[@]}" RECIPE="$SRC/configs/quickstart.yaml" timeout 30 sbatch --parsable \
    --job-name="$name" --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=5 \
    --output="$WORK/job-$name.out" "$SLURM_SCRIPTS/train.sbatch" "$@"
}

expect_log() {  # expect_log FILE REGEX WHAT
  grep -Eq "$2" "$1" || fail "$3: no line matching '$2' in $1"
}

check_checkpoint() {  # check_checkpoint OUT STEP
  python3 - "$1" "$2" <<'PY' || fail "checkpoint step-$2 in $1"
import json, os, sys
out, step = sys.argv[1], int(sys.argv[2])
ckpt = os.path.join(out, "checkpoints", "step-%d" % step)
m = json.load(open(os.path.join(ckpt, "manifest.json")))
assert m["step"] == step, m["step"]
assert m["layout"]["world_size"] == 2, m["layout"]
latest = open(os.path.join(out, "checkpoints", "latest")).read().strip()
assert latest == "step-%d" % step, latest
print("checkpoint ok: %s (world_size %d), latest -> %s" % (ckpt, m["layout"]["world_size"], latest))
PY
}

# --- 1. srun, fresh run, 10 steps ---------------------------------------------------------------
OUT1=$WORK/run1
t=$SECONDS
job=$(DSTRAIN="$DSTRAIN" OUT="$OUT1" submit first -- "${TINY[@]}" train.steps=10) || fail "sbatch (first)"
wait_state "$job" 90 COMPLETED
[ "$(job_field "$job" ExitCode)" = 0:0 ] || fail "job $job exit code $(job_field "$job" ExitCode)"
LOG=$WORK/job-first.out
cat "$LOG"
expect_log "$LOG" "launcher=slurm rank=0 world_size=2 " "srun start-up line"
expect_log "$LOG" "backend mpi \| dp=2 " "MPI world of 2"
expect_log "$LOG" "\(2 ranks x " "2 ranks in the batch"
expect_log "$LOG" "step 10/10 \| loss" "final step"
expect_log "$LOG" "srun exited with status 0" "srun status"
grep -q "resumed from" "$LOG" && fail "first run resumed"
test -s "$OUT1/checkpoints/step-5/manifest.json" || fail "no step-5 manifest"
check_checkpoint "$OUT1" 10
test -s "$OUT1/model.h5" || fail "no weights"
echo "test_slurm_sbatch: 1. srun run ok in $((SECONDS - t))s"

# --- 2. the same OUT again, 20 steps, mpirun inside the allocation: resumes from step 10 ----------
t=$SECONDS
job=$(DSTRAIN="$DSTRAIN" OUT="$OUT1" LAUNCHER=mpirun submit second -- "${TINY[@]}" train.steps=20) ||
  fail "sbatch (second)"
wait_state "$job" 90 COMPLETED
[ "$(job_field "$job" ExitCode)" = 0:0 ] || fail "job $job exit code $(job_field "$job" ExitCode)"
LOG=$WORK/job-second.out
cat "$LOG"
expect_log "$LOG" "adding --resume latest" "template resume"
expect_log "$LOG" "launcher=openmpi rank=0 world_size=2 " "mpirun start-up line"
expect_log "$LOG" "resumed from .*step-10 at step 10" "resume line"
expect_log "$LOG" "step 20/20 \| loss" "final step"
grep -q "step 5/20" "$LOG" && fail "second run trained step 5 again"
check_checkpoint "$OUT1" 20
echo "test_slurm_sbatch: 2. resubmit + resume (mpirun) ok in $((SECONDS - t))s"

# --- 3. scontrol requeue of a running job: the next attempt resumes ------------------------------
# The first attempt trains 5 steps (checkpoint step-5), then idles like a long run; the second
# attempt (SLURM_RESTART_COUNT=1) is plain dstrain with the job's 10 steps.
cat >"$WORK/preempted_dstrain.sh" <<EOF
#!/usr/bin/env bash
if [ "\${SLURM_RESTART_COUNT:-0}" = 0 ]; then
  "$DSTRAIN" "\$@" train.steps=5 || exit
  echo "preempted_dstrain: rank \${SLURM_PROCID:-?} idles until the requeue" >&2
  exec sleep 300
fi
exec "$DSTRAIN" "\$@"
EOF
chmod +x "$WORK/preempted_dstrain.sh"
OUT3=$WORK/run3
t=$SECONDS
job=$(DSTRAIN="$WORK/preempted_dstrain.sh" OUT="$OUT3" submit requeue -- "${TINY[@]}" train.steps=10) ||
  fail "sbatch (requeue)"
wait_state "$job" 60 RUNNING
deadline=$((SECONDS + 60))
until grep -q "idles until the requeue" "$WORK/job-requeue.out" 2>/dev/null &&
  [ "$(cat "$OUT3/checkpoints/latest" 2>/dev/null)" = step-5 ]; do
  [ $SECONDS -lt $deadline ] || fail "first attempt did not reach its step-5 checkpoint in 60s"
  [ "$(job_field "$job" JobState)" = RUNNING ] || fail "job $job is $(job_field "$job" JobState)"
  sleep 0.5
done
timeout 30 scontrol requeue "$job" || fail "scontrol requeue $job"
wait_state "$job" 60 PENDING
# Slurm holds a requeued job for 120 s (EligibleTime); let it start sooner, but not within the
# second in which slurmd revoked the old attempt's credential (revocation has 1 s granularity: a
# relaunch in the same second fails with "Job credential revoked"). The revocation happened
# before the job left COMPLETING for PENDING, so 2 s after PENDING is safe.
sleep 2
timeout 30 scontrol update JobId="$job" StartTime=now || fail "scontrol update StartTime"
wait_state "$job" 90 COMPLETED
[ "$(job_field "$job" ExitCode)" = 0:0 ] || fail "job $job exit code $(job_field "$job" ExitCode)"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job restarts $(job_field "$job" Restarts)"
LOG=$WORK/job-requeue.out
cat "$LOG"
expect_log "$LOG" "attempt 1 on" "first attempt kept in the log (--open-mode=append)"
expect_log "$LOG" "DUE TO JOB REQUEUE" "requeue"
expect_log "$LOG" "attempt 2 on" "second attempt"
expect_log "$LOG" "found .*checkpoints/latest \(step-5\): adding --resume latest" "template resume"
expect_log "$LOG" "resumed from .*step-5 at step 5" "resume line"
expect_log "$LOG" "step 10/10 \| loss" "final step"
check_checkpoint "$OUT3" 10
echo "test_slurm_sbatch: 3. requeue + resume ok in $((SECONDS - t))s"

# --- 4. one rank dies: --kill-on-bad-exit ends the step and the job fails at once ----------------
cat >"$WORK/dying_dstrain.sh" <<EOF
#!/usr/bin/env bash
if [ "\${SLURM_PROCID:-0}" = 1 ]; then echo "dying_dstrain: rank 1 exits with status 3" >&2; exit 3; fi
exec "$DSTRAIN" "\$@"
EOF
chmod +x "$WORK/dying_dstrain.sh"
t=$SECONDS
job=$(DSTRAIN="$WORK/dying_dstrain.sh" OUT="$WORK/run4" submit dying -- "${TINY[@]}" train.steps=10) ||
  fail "sbatch (dying)"
wait_state "$job" 60 FAILED
LOG=$WORK/job-dying.out
cat "$LOG"
expect_log "$LOG" "task 1: Exited with exit code 3" "rank 1's exit"
expect_log "$LOG" "srun exited with status [1-9]" "srun status"
grep -q "step 10/10" "$LOG" && fail "the surviving rank finished training"
echo "test_slurm_sbatch: 4. dead rank ends the job in $((SECONDS - t))s"

echo "test_slurm_sbatch: all ok"

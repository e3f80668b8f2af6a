#!/usr/bin/env bash
# Kill and resume: SIGKILL of one rank at 10 points drawn at random (fixed seed) across save and
# non-save steps, then 3 kill -9 from outside at points drawn the same way: inside a checkpoint
# save (its *.partial directory exists), right after a commit (`latest` names the new step) and
# between steps (metrics.jsonl has a given number of steps). Each time the whole job must end (no
# rank hangs), the kill must have hit a rank, every checkpoint directory left behind must be
# complete and verified, `--resume latest` must continue from the checkpoint the kill point
# leaves, and the final weights must equal an uninterrupted run's, byte for byte.
# usage: test_kill_resume.sh DSTRAIN WORKDIR SOURCE_DIR
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # fail
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"

"$DSTRAIN" synth corpus.txt --docs 400 --seed 5 > /dev/null
STEPS=12
EVERY=3
ARGS=("$SRC/configs/quickstart.yaml" data.train_path=corpus.txt train.steps=$STEPS
  train.eval_every=0 train.eval_batches=1 train.log_every=4 train.micro_batch_size=2
  data.seq_len=32 model.hidden_size=32 model.intermediate_size=64 model.num_hidden_layers=2
  model.num_attention_heads=4 model.num_key_value_heads=2 schedule.warmup_steps=2
  checkpoint.every_steps=$EVERY checkpoint.keep_last=0 parallel.zero_stage=2
  train.peak_flops_per_rank=1e9)
MPI=(timeout 120 mpirun -np 2 --oversubscribe --bind-to none)

# The final weights of a run, as deterministic bytes (safetensors has no timestamps).
final_weights() {
  "$DSTRAIN" ckpt convert "$1/checkpoints/step-$STEPS" --to hf "$1/export" > /dev/null
  echo "$1/export/model.safetensors"
}

# Every committed checkpoint verifies; `latest` names a committed one.
check_checkpoints() {
  local root=$1/checkpoints
  [ -d "$root" ] || return 0
  for dir in "$root"/step-*; do
    [ -e "$dir" ] || continue
    case "$dir" in *.partial) continue ;; esac
    "$DSTRAIN" ckpt inspect "$dir" > /dev/null 2>&1 || fail "$dir is not a valid checkpoint"
  done
  if [ -f "$root/latest" ]; then
    test -f "$root/$(cat "$root/latest")/manifest.json" || fail "latest points to an uncommitted checkpoint"
  fi
}

# resume_to_end RUN EXPECTED ARGS...: `--resume latest` must start from one of the steps in
# EXPECTED ("3" or "3|6"; 0: no checkpoint, a fresh start), then train to the end.
resume_to_end() {
  local run=$1 expected=$2 resume=() from=0
  shift 2
  if [ -f "$run/checkpoints/latest" ]; then
    resume=(--resume latest)
    from=$(sed -n 's/^step-\([0-9]*\)$/\1/p' "$run/checkpoints/latest")
  fi
  [[ "|$expected|" == *"|$from|"* ]] ||
    fail "$run: the checkpoint to resume from is step ${from}, expected ${expected//|/ or }"
  "${MPI[@]}" "$DSTRAIN" train "$@" train.output_dir="$run" "${resume[@]}" \
    > "$run.resume.log" 2>&1 || { cat "$run.resume.log"; fail "$run: resume failed"; }
  if [ "$from" -gt 0 ]; then
    grep -q "resumed from $run/checkpoints/step-$from at step $from" "$run.resume.log" ||
      { cat "$run.resume.log"; fail "$run: did not resume from step-$from"; }
  fi
  RESUMED_FROM=$from
}

"${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" train.output_dir=reference > reference.log 2>&1 ||
  { cat reference.log; fail "reference run"; }
REFERENCE=$(final_weights reference)

# 10 kill points: 5 at step phases of any step, 5 inside checkpoint saves. Saves are synchronous
# (checkpoint.async false): a kill in step S (step_begin, backward, step_end) leaves the last save
# before S; a kill in the save of S leaves the save before it, except that rank 0 may still
# commit S when rank 1 dies after writing its file; a kill at the commit of S (rank 0, before
# the rename) leaves the save before S.
mapfile -t POINTS < <(/usr/bin/python3 - "$STEPS" "$EVERY" <<'PY'
import random, sys
steps, every = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(20261122)
save_steps = list(range(every, steps + 1, every))
for i in range(10):
    if i < 5:
        point, step = rng.choice(["step_begin", "backward", "step_end"]), rng.randint(1, steps)
    else:
        point, step = rng.choice(["save", "commit"]), rng.choice(save_steps)
    rank = 0 if point == "commit" else rng.randint(0, 1)
    before = (step - 1) // every * every
    expected = f"{before}|{step}" if point == "save" and rank == 1 else f"{before}"
    print(f"kill:rank={rank},step={step},point={point} {expected}")
PY
)
[ "${#POINTS[@]}" -eq 10 ] || fail "drew ${#POINTS[@]} kill points, expected 10"

trial=0
for line in "${POINTS[@]}"; do
  read -r fault expected <<< "$line"
  trial=$((trial + 1))
  run=kill$trial
  code=0
  DST_FAULT=$fault "${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" train.output_dir=$run > $run.log 2>&1 ||
    code=$?
  [ $code -ne 0 ] || fail "$fault: the job exited 0"
  [ $code -ne 124 ] || { cat $run.log; fail "$fault: the job hung after the kill"; }
  grep -q "dstrain: fault injection: kill" $run.log || fail "$fault: the fault did not fire"
  check_checkpoints $run
  resume_to_end $run "$expected" "${ARGS[@]}"
  cmp -s "$REFERENCE" "$(final_weights $run)" || fail "$fault: final weights differ from the reference"
  echo "ok $trial: $fault (exit $code), resumed from step $RESUMED_FROM"
done

# --- kill -9 from outside ------------------------------------------------------------------------
# A larger model (a checkpoint of ~30 MB, a save of tens of milliseconds) so that the watcher
# sees a save in progress; its own uninterrupted reference run.
BIG=("${ARGS[@]}" model.hidden_size=384 model.intermediate_size=768)
# The strikes prune as they go (keep_last=1): a kill right after a commit may land inside the
# pruning of the previous checkpoint, which must never leave it half deleted under its own name.
STRIKE=("${BIG[@]}" checkpoint.keep_last=1)
"${MPI[@]}" "$DSTRAIN" train "${BIG[@]}" train.output_dir=big_reference > big_reference.log 2>&1 ||
  { cat big_reference.log; fail "reference run (larger model)"; }
grep -q "hidden 384" big_reference.log || fail "the larger model's overrides were not applied"
BIG_REFERENCE=$(final_weights big_reference)
rm -rf big_reference/checkpoints

# strike JOB_PID RUN KIND N RANK: waits for the job's 2 rank processes, then for the moment KIND
# N (save: RUN/checkpoints/step-N.partial exists; commit: `latest` names step-N; step: N steps
# in metrics.jsonl), sends SIGKILL to the rank RANK process and waits until it is gone. Prints
# the victim's pid; fails (with the reason on stderr) when the job ends first or the victim
# survives.
cat > strike.py <<'PY'
import os, signal, sys, time

job, run, kind, n, rank = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ckpt = os.path.join(run, "checkpoints")

def die(why):
    sys.exit(f"strike {kind} {n}: {why}")

def stat(pid):  # (ppid, state, start time) or None when the process is gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0], fields[19]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None

def ranks():  # world rank -> pid of the job's dstrain processes
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        world = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"OMPI_COMM_WORLD_RANK=")]
        if not world:
            continue
        ancestor = pid
        while ancestor > 1 and ancestor != job:
            s = stat(ancestor)
            ancestor = s[0] if s else 1
        if ancestor == job:
            found[world[0]] = pid
    return found

def reached():
    if kind == "save":
        return os.path.isdir(os.path.join(ckpt, f"step-{n}.partial"))
    if kind == "commit":
        try:
            return open(os.path.join(ckpt, "latest")).read().strip() == f"step-{n}"
        except FileNotFoundError:
            return False
    try:
        with open(os.path.join(run, "metrics.jsonl")) as f:
            return sum(1 for line in f if line.endswith("\n") and '"loss"' in line) >= n
    except FileNotFoundError:
        return False

deadline = time.monotonic() + 90
found = {}
while len(found) < 2:
    if stat(job) is None:
        die("the job ended before its ranks were found")
    if time.monotonic() > deadline:
        die(f"found ranks {found}, not 2")
    found = ranks()
    time.sleep(0.01)
victim = found[rank]
started = stat(victim)[2]
while not reached():
    if stat(victim) is None or stat(job) is None:
        die("the job ended before the strike")
    if time.monotonic() > deadline:
        die("not reached")
    time.sleep(0.001)
os.kill(victim, signal.SIGKILL)
if kind == "save" and not os.path.isdir(os.path.join(ckpt, f"step-{n}.partial")):
    die("the save was over when the kill was sent")
while True:  # gone (or a zombie, dead until mpirun reaps it)
    s = stat(victim)
    if s is None or s[2] != started or s[1] in ("Z", "X"):
        break
    if time.monotonic() > deadline:
        die(f"rank {rank} (pid {victim}) survived SIGKILL")
    time.sleep(0.01)
print(victim)
PY

# 3 strikes: one of each kind, at a drawn step, on a drawn rank; with the rank's expected
# checkpoint to resume from (the strike lands within milliseconds, long before the next save).
mapfile -t STRIKES < <(/usr/bin/python3 - "$STEPS" "$EVERY" <<'PY'
import random, sys
steps, every = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(20261123)
kinds = ["save", "commit", "step"]
rng.shuffle(kinds)
for kind in kinds:
    if kind == "save":  # killed as the save begins: no rank can commit it
        n = rng.choice(range(every, steps + 1, every)); expected = n - every
    elif kind == "commit":  # after the commit of n: resumes from it
        n = rng.choice(range(every, steps, every)); expected = n
    else:  # after step n, the first step after a save: the next save is 2 steps away
        n = rng.choice(range(every + 1, steps, every)); expected = n - 1
    print(kind, n, rng.randint(0, 1), expected)
PY
)
[ "${#STRIKES[@]}" -eq 3 ] || fail "drew ${#STRIKES[@]} external strikes, expected 3"

for line in "${STRIKES[@]}"; do
  read -r kind n rank expected <<< "$line"
  trial=$((trial + 1))
  run=external$trial
  what="kill -9 of rank $rank at $kind $n"
  "${MPI[@]}" "$DSTRAIN" train "${STRIKE[@]}" train.output_dir=$run > $run.log 2>&1 &
  job=$!
  victim=$(/usr/bin/python3 strike.py $job $run "$kind" "$n" "$rank") ||
    { kill $job 2> /dev/null || true; wait $job || true; cat $run.log; fail "$what: no rank killed"; }
  code=0
  wait $job || code=$?
  [ $code -ne 0 ] || { cat $run.log; fail "$what: the job exited 0"; }
  [ $code -ne 124 ] || { cat $run.log; fail "$what: the job hung after the kill"; }
  [ ! -e /proc/$victim ] || fail "$what: pid $victim still exists after the job ended"
  grep -q "process rank $rank with PID .* exited on signal 9" $run.log ||
    { cat $run.log; fail "$what: mpirun did not see rank $rank die of SIGKILL"; }
  if [ "$kind" = save ]; then
    test -d $run/checkpoints/step-$n.partial || fail "$what: no partial save left behind"
    test ! -e $run/checkpoints/step-$n || fail "$what: the interrupted save was committed"
  fi
  check_checkpoints $run
  resume_to_end $run "$expected" "${STRIKE[@]}"
  cmp -s "$BIG_REFERENCE" "$(final_weights $run)" || fail "$what: final weights differ from the reference"
  rm -rf $run/checkpoints
  echo "ok $trial: $what: pid $victim killed (exit $code), resumed from step $RESUMED_FROM"
done
echo "kill and resume: all trials end, resume and match the uninterrupted run"

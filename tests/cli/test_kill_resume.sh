#!/usr/bin/env bash
# Kill and resume: SIGKILL of one rank at 10 points drawn at random (fixed seed) across save and
# non-save steps, plus one kill -9 from outside at a random moment. Each time the whole job must
# end (no rank hangs), every checkpoint directory left behind must be complete and verified,
# `--resume latest` must continue, and the final weights must equal an uninterrupted run's,
# byte for byte.
# usage: test_kill_resume.sh DSTRAIN WORKDIR SOURCE_DIR
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
fail() { echo "FAIL: $*"; exit 1; }

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

resume_to_end() {
  local run=$1 resume=()
  [ -f "$run/checkpoints/latest" ] && resume=(--resume latest)
  "${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" train.output_dir="$run" "${resume[@]}" \
    >> "$run.log" 2>&1 || { cat "$run.log"; fail "$run: resume failed"; }
}

"${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" train.output_dir=reference > reference.log 2>&1 ||
  { cat reference.log; fail "reference run"; }
REFERENCE=$(final_weights reference)

# 10 kill points: 5 at step phases of any step, 5 inside checkpoint saves.
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
    print(f"kill:rank={rank},step={step},point={point}")
PY
)

trial=0
for fault in "${POINTS[@]}"; do
  trial=$((trial + 1))
  run=kill$trial
  set +e
  DST_FAULT=$fault "${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" train.output_dir=$run > $run.log 2>&1
  code=$?
  set -e
  [ $code -ne 0 ] || fail "$fault: the job exited 0"
  [ $code -ne 124 ] || { cat $run.log; fail "$fault: the job hung after the kill"; }
  grep -q "fault injection: kill" $run.log || fail "$fault: the fault did not fire"
  check_checkpoints $run
  resume_to_end $run
  cmp -s "$REFERENCE" "$(final_weights $run)" || fail "$fault: final weights differ from the reference"
  from=$(grep -o 'resumed from [^ ]*' $run.log | head -1 || true)
  echo "ok $trial: $fault (exit $code), ${from:-restarted from scratch (no checkpoint yet)}"
done

# kill -9 from outside, at a random moment of a run.
run=external
"${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" train.output_dir=$run > $run.log 2>&1 &
job=$!
# Wait for both ranks to exist, then strike at a random moment (start-up, a step, a save, exit).
victim=
for _ in $(seq 200); do
  launcher=$(pgrep -P $job mpirun || true)
  ranks=$([ -n "$launcher" ] && pgrep -P "$launcher" || true)
  if [ "$(echo "$ranks" | grep -c .)" -ge 2 ]; then victim=$(echo "$ranks" | tail -1); break; fi
  sleep 0.05
done
sleep "$(/usr/bin/python3 -c 'import random; print(round(random.Random(7).uniform(0.2, 1.0), 2))')"
if [ -n "$victim" ]; then
  kill -9 "$victim" || true
  set +e
  wait $job
  code=$?
  set -e
  [ $code -ne 124 ] || fail "external kill: the job hung"
  check_checkpoints $run
  if [ $code -ne 0 ]; then resume_to_end $run; fi
  cmp -s "$REFERENCE" "$(final_weights $run)" || fail "external kill: final weights differ"
  echo "ok 11: kill -9 of pid $victim from outside (exit $code)"
else
  wait $job
  echo "ok 11: the run ended before the external kill"
fi
echo "kill and resume: all trials end, resume and match the uninterrupted run"

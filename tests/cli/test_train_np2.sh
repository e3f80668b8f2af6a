#!/usr/bin/env bash
# End-to-end: synthetic corpus -> 2-rank data-parallel training from the quickstart recipe (a
# smaller model and fewer steps) -> metrics.jsonl, eval loss going down, weights saved.
# usage: test_train_np2.sh DSTRAIN WORKDIR SOURCE_DIR
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
"$DSTRAIN" synth corpus.txt --docs 3000 --seed 3
mpirun -np 2 --bind-to none "$DSTRAIN" train "$SRC/configs/quickstart.yaml" \
  data.train_path=corpus.txt train.output_dir=run train.steps=40 train.eval_every=20 \
  train.log_every=10 train.micro_batch_size=4 data.seq_len=64 model.hidden_size=64 \
  model.intermediate_size=128 model.num_hidden_layers=2 schedule.warmup_steps=5 2> train.log
cat train.log
test -s run/model.h5 || { echo "no weights"; exit 1; }
test -s run/config.json || { echo "no config.json"; exit 1; }
test -s run/recipe.yaml || { echo "no recipe.yaml"; exit 1; }
grep -q "step 40/40 | loss" train.log || { echo "no progress line"; exit 1; }
python3 - <<'PY'
import json
records = [json.loads(line) for line in open("run/metrics.jsonl")]
assert records[0]["step"] == 0 and "eval_loss" in records[0], records[0]
rows = records[1:]
assert len(rows) == 40, len(rows)
for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "comm_bytes"):
    assert all(key in r for r in rows), key
evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
assert len(evals) == 2, evals
assert all(r["comm_bytes"] > 0 for r in rows)
assert rows[-1]["loss"] < rows[0]["loss"] - 1.0, (rows[0]["loss"], rows[-1]["loss"])
assert evals[-1] < records[0]["eval_loss"] - 1.0, (records[0]["eval_loss"], evals)
print("metrics ok: loss %.3f -> %.3f, eval %s" % (rows[0]["loss"], rows[-1]["loss"], evals))
PY

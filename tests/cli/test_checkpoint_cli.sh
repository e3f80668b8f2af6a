#!/usr/bin/env bash
# End-to-end checkpoints through the CLI: 2-rank training that saves every 3 steps with
# encryption and keep_last, inspect, resume from `latest` (metrics continue), convert to a
# Hugging Face folder and train from it, and every bad input the checkpoint issue lists: each a
# one-line error naming the file, a non-zero exit, and the checkpoint left untouched.
# usage: test_checkpoint_cli.sh DSTRAIN WORKDIR SOURCE_DIR SHARED_DATA
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
SHARED=$4
# fail, expect_error EXIT PATTERN COMMAND... (exit status, one "dstrain: error:" line matching).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
"$DSTRAIN" synth corpus.txt --docs 400 --seed 5
head -c 32 /dev/urandom > key.bin
head -c 32 /dev/urandom > other.key
SMALL=(data.train_path=corpus.txt train.eval_every=0 train.log_every=3 train.micro_batch_size=2
  data.seq_len=32 model.hidden_size=32 model.intermediate_size=64 model.num_hidden_layers=2
  schedule.warmup_steps=2 train.eval_batches=1)
CKPT=(checkpoint.every_steps=3 checkpoint.keep_last=1 checkpoint.encryption.key_file=key.bin)

mpirun -np 2 --bind-to none "$DSTRAIN" train "$SRC/configs/quickstart.yaml" "${SMALL[@]}" \
  "${CKPT[@]}" train.output_dir=run train.steps=6 parallel.zero_stage=2 2> train.log ||
  { cat train.log; fail "training"; }
test "$(cat run/checkpoints/latest)" = "step-6" || fail "latest is not step-6"
test ! -e run/checkpoints/step-3 || fail "keep_last=1 kept step-3"
ls run/checkpoints | grep -q partial && fail "partial directory left behind"
grep -q "$(od -An -tx1 key.bin | tr -d ' \n' | head -c 16)" run/checkpoints/step-6/manifest.json &&
  fail "key bytes in the manifest"
"$DSTRAIN" ckpt inspect run/checkpoints/step-6 --key-file key.bin > inspect.txt ||
  { cat inspect.txt; fail "inspect"; }
grep -q "dp 2 x tp 1 x pp 1, ZeRO stage 2" inspect.txt || { cat inspect.txt; fail "layout"; }
grep -q "encrypted (AES-256-GCM)" inspect.txt || fail "not encrypted"
grep -q "rank-00001.h5 .* sha256 ok" inspect.txt || fail "checksums"
echo "ok: trained 6 steps, inspected"

# A save interrupted by a crash leaves only a *.partial directory: never loaded, removed by the
# next save.
mkdir -p run/checkpoints/step-8.partial && echo junk > run/checkpoints/step-8.partial/rank-00000.h5

# Resume on one rank (a different layout) for 3 more steps; metrics continue at step 7.
"$DSTRAIN" train "$SRC/configs/quickstart.yaml" "${SMALL[@]}" "${CKPT[@]}" parallel.dp=1 \
  train.output_dir=run train.steps=9 --resume latest 2> resume.log || { cat resume.log; fail "resume"; }
grep -q "resumed from run/checkpoints/step-6 at step 6" resume.log || { cat resume.log; fail "resume log"; }
python3 - <<'PY'
import json
steps = [json.loads(l)["step"] for l in open("run/metrics.jsonl") if '"loss"' in l]
assert steps == list(range(1, 10)), steps
print("ok: metrics continue", steps)
PY
test "$(cat run/checkpoints/latest)" = "step-9" || fail "latest is not step-9"
test ! -e run/checkpoints/step-8.partial || fail "stale partial checkpoint not removed"

# Convert to Hugging Face and start a new run from it.
"$DSTRAIN" ckpt convert run/checkpoints/step-9 --to hf hf --key-file key.bin
test -s hf/model.safetensors && test -s hf/config.json || fail "hf export"
"$DSTRAIN" ckpt convert run/checkpoints/step-9 --to consolidated whole --key-file key.bin
test -s whole/model.h5 || fail "consolidated export"
"$DSTRAIN" train "$SRC/configs/quickstart.yaml" "${SMALL[@]}" parallel.dp=1 train.output_dir=from_hf \
  train.steps=1 train.init_from=hf 2> from_hf.log || { cat from_hf.log; fail "init_from"; }
grep -q "initialised from the Hugging Face model hf" from_hf.log || fail "init_from log"
# Provenance: the manifest names the corpus with its SHA-256, the source commit and the recipe;
# the exports carry it (provenance.json); a run from an HF folder records that folder's files.
"$DSTRAIN" ckpt inspect run/checkpoints/step-9 --key-file key.bin > inspect9.txt
grep -q "train_data corpus.txt sha256 $(sha256sum corpus.txt | cut -c1-64)" inspect9.txt ||
  { cat inspect9.txt; fail "provenance of the corpus"; }
grep -q "provenance: source commit [0-9a-f]\{40\}\|provenance: source commit unknown" inspect9.txt ||
  fail "provenance: source commit"
python3 - <<'PY' || fail "provenance.json of the exports"
import json
a = json.load(open("hf/provenance.json"))
b = json.load(open("whole/provenance.json"))
assert a == b, "the two exports disagree"
assert "train_path: corpus.txt" in a["recipe"], a["recipe"]
assert [i["role"] for i in a["inputs"]] == ["train_data"], a["inputs"]
assert a["library_version"] and len(a["inputs"][0]["sha256"]) == 64
print("ok: provenance", a["source_commit"][:12])
PY
"$DSTRAIN" train "$SRC/configs/quickstart.yaml" "${SMALL[@]}" parallel.dp=1 train.output_dir=from_hf2 \
  train.steps=1 train.init_from=hf checkpoint.every_steps=1 2> from_hf2.log ||
  { cat from_hf2.log; fail "init_from with a checkpoint"; }
"$DSTRAIN" ckpt inspect from_hf2/checkpoints/step-1 > inspect_hf.txt
grep -q "init_from hf/model.safetensors sha256 $(sha256sum hf/model.safetensors | cut -c1-64)" \
  inspect_hf.txt || { cat inspect_hf.txt; fail "provenance of init_from"; }
# A converted folder whose provenance.json is not JSON: one line naming it, nothing written.
cp -r hf bad_provenance && echo '{"inputs": [' > bad_provenance/provenance.json
expect_error 1 "bad_provenance/provenance.json: not JSON" "$DSTRAIN" ckpt convert bad_provenance \
  --to hf bad_provenance_out
test ! -e bad_provenance_out || fail "a failed convert wrote bad_provenance_out"
# The real tiny LLaMA-2 checkpoint (F16 safetensors) imports too.
cat > tiny.yaml <<YAML
model:
  hf_config: $SHARED/models/tiny-llama-2/config.json
data: {train_path: corpus.txt, seq_len: 32}
train: {steps: 2, micro_batch_size: 2, eval_every: 0, eval_batches: 1, output_dir: tiny,
        init_from: $SHARED/models/tiny-llama-2}
YAML
"$DSTRAIN" train tiny.yaml 2> tiny.log || { cat tiny.log; fail "tiny llama"; }
grep -q "initialised from the Hugging Face model" tiny.log || { cat tiny.log; fail "tiny log"; }
echo "ok: converted, trained from the export and from tiny-llama-2"

# --- bad input -------------------------------------------------------------------------------
STEP=run/checkpoints/step-9
sha_before=$(sha256sum $STEP/* | sha256sum)
RESUME=("$DSTRAIN" train "$SRC/configs/quickstart.yaml" "${SMALL[@]}" train.output_dir=run
  train.steps=12 parallel.dp=1)
expect_error 1 "no checkpoint to resume from" "$DSTRAIN" train "$SRC/configs/quickstart.yaml" \
  "${SMALL[@]}" parallel.dp=1 train.output_dir=empty --resume latest
expect_error 1 "step-9: the checkpoint is encrypted" "${RESUME[@]}" --resume latest
expect_error 1 "step-9: wrong encryption key" "${RESUME[@]}" --resume latest \
  checkpoint.encryption.key_file=other.key
expect_error 1 "step-9: checkpoint of a different model: model.hidden_size" "${RESUME[@]}" \
  "${CKPT[@]}" --resume latest model.hidden_size=64 model.intermediate_size=64
test "$(sha256sum $STEP/* | sha256sum)" = "$sha_before" || fail "a failed resume changed the checkpoint"

# Damaged copies of the checkpoint.
damaged() { rm -rf bad && cp -r $STEP bad; }
damaged && truncate -s -100 bad/rank-00000.h5
expect_error 1 "bad/rank-00000.h5: truncated" "${RESUME[@]}" "${CKPT[@]}" --resume bad
damaged && printf '\x01' | dd of=bad/rank-00000.h5 bs=1 seek=2000 conv=notrunc 2> /dev/null
expect_error 1 "bad/rank-00000.h5: checksum mismatch" "${RESUME[@]}" "${CKPT[@]}" --resume bad
# One byte changed in an encrypted file whose checksum was updated to match: GCM rejects it.
damaged && printf '\x01' | dd of=bad/rank-00000.h5 bs=1 seek=3000 conv=notrunc 2> /dev/null
python3 - <<'PY'
import hashlib, json
m = json.load(open("bad/manifest.json"))
m["files"]["rank-00000.h5"]["sha256"] = hashlib.sha256(open("bad/rank-00000.h5", "rb").read()).hexdigest()
json.dump(m, open("bad/manifest.json", "w"))
PY
expect_error 1 "bad/rank-00000.h5: authentication failed" "${RESUME[@]}" "${CKPT[@]}" --resume bad
damaged && python3 - <<'PY'
import json
m = json.load(open("bad/manifest.json"))
m["tensors"]["model.norm.weight"]["states"]["master"]["pieces"][0]["file"] = "rank-00007.h5"
json.dump(m, open("bad/manifest.json", "w"))
PY
expect_error 1 "tensor 'model.norm.weight'.*rank-00007.h5" "${RESUME[@]}" "${CKPT[@]}" --resume bad
# Manifest edits on an unencrypted checkpoint (in an encrypted one the file's authentication
# already fails, since the tensors a file holds are its associated data).
damaged_plain() { rm -rf bad && cp -r from_hf/checkpoints/step-1 bad; }
damaged_plain && python3 - <<'PY'
import json
m = json.load(open("bad/manifest.json"))
m["tensors"]["model.norm.weight"]["states"]["master"]["pieces"] = []
json.dump(m, open("bad/manifest.json", "w"))
PY
expect_error 1 "the master of tensor 'model.norm.weight' is held by no file" "${RESUME[@]}" --resume bad
damaged_plain && python3 - <<'PY'
import json
m = json.load(open("bad/manifest.json"))
m["tensors"]["lm_head.weight"]["shape"] = [259, 31]
json.dump(m, open("bad/manifest.json", "w"))
PY
expect_error 1 "tensor 'lm_head.weight' has shape \[259, 31\]" "${RESUME[@]}" \
  --resume bad
damaged_plain && python3 - <<'PY'
import json
m = json.load(open("bad/manifest.json"))
m["tensors"]["lm_head.weight"]["states"]["master"]["dtype"] = "float16"
json.dump(m, open("bad/manifest.json", "w"))
PY
expect_error 1 "the master of tensor 'lm_head.weight' is float16, expected float32" \
  "${RESUME[@]}" --resume bad
damaged && truncate -s -1 bad/rank-00000.h5
expect_error 1 "bad: 1 file(s) failed verification" "$DSTRAIN" ckpt inspect bad --key-file key.bin

# A malformed safetensors file in a model folder.
mkdir -p badhf && cp hf/config.json badhf/ && python3 - <<'PY'
import struct
header = b'{"lm_head.weight":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}'
open("badhf/model.safetensors", "wb").write(struct.pack("<Q", len(header)) + header + b"\0" * 8)
PY
expect_error 1 "badhf/model.safetensors: .*F99.*lm_head.weight\|badhf/model.safetensors: .*lm_head.weight.*F99" \
  "$DSTRAIN" train "$SRC/configs/quickstart.yaml" "${SMALL[@]}" parallel.dp=1 train.output_dir=x \
  train.init_from=badhf
expect_error 1 "nohf: not a Hugging Face model folder" "$DSTRAIN" train \
  "$SRC/configs/quickstart.yaml" "${SMALL[@]}" parallel.dp=1 train.output_dir=x train.init_from=nohf
expect_error 2 "missing.key" "$DSTRAIN" train "$SRC/configs/quickstart.yaml" "${SMALL[@]}" \
  parallel.dp=1 train.output_dir=x checkpoint.encryption.key_file=missing.key
echo "all checkpoint CLI checks passed"

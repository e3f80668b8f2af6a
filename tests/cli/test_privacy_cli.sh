#!/usr/bin/env bash
# DP-SGD through the CLI: LoRA on 2 ranks under ZeRO-2 with Poisson sampling and the noise
# multiplier solved for a target epsilon; metrics.jsonl reports epsilon (rising, within the
# target at the end), the sample rate and the noise multiplier; the checkpoint's provenance and
# `ckpt inspect` carry the privacy parameters; bad privacy settings are one-line errors. An
# encrypted prepared corpus: no plaintext on disk, training and `dstrain eval --data` read it
# with the key, and a missing key or a changed byte is a one-line error naming the file. An
# encrypted export (`ckpt convert --encrypt-key-file`) gives the plaintext export's eval loss with
# the key and a one-line error without it.
# usage: test_privacy_cli.sh DSTRAIN WORKDIR SOURCE_DIR
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"

"$DSTRAIN" synth corpus.txt --docs 2000 > /dev/null
head -c 32 /dev/urandom > export.key
cat > private.yaml <<'YAML'
model: {vocab_size: 259, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,
        num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}
parallel: {dp: 2, zero_stage: 2}
adapters:
  - {type: lora, r: 4, alpha: 8, target_modules: [q_proj, v_proj, down_proj]}
optim: {lr: 1.0e-2, grad_clip: 0.0}
data: {train_path: corpus.txt, val_fraction: 0.05, seq_len: 32}
train: {steps: 6, micro_batch_size: 4, log_every: 2, eval_every: 3, eval_batches: 2,
        output_dir: run, progress: lines}
checkpoint: {at_end: true, encryption: {key_file: export.key}, encrypt_exports: true}
privacy: {max_grad_norm: 1.0, target_epsilon: 4.0, delta: 1.0e-5}
YAML
mpirun -np 2 --bind-to none "$DSTRAIN" train private.yaml > train.log 2>&1 ||
  { cat train.log; fail "DP-SGD training"; }
grep -q "DP-SGD: every example's gradient clipped to 1" train.log ||
  { cat train.log; fail "no DP-SGD plan line"; }
grep -q "privacy: epsilon [0-9.]* at delta 1e-05 after 6 DP-SGD steps" train.log ||
  { cat train.log; fail "no final epsilon line"; }
python3 - <<'PY' || fail "metrics.jsonl privacy fields"
import json
steps = [json.loads(l) for l in open("run/metrics.jsonl") if '"loss"' in l]
assert len(steps) == 6, len(steps)
eps = [s["epsilon"] for s in steps]
assert all(a < b for a, b in zip(eps, eps[1:])), eps
assert 3.9 <= eps[-1] <= 4.0, eps[-1]
for s in steps:
    assert 0 < s["sample_rate"] < 1 and s["noise_multiplier"] > 0 and s["delta"] == 1e-5, s
    assert s["examples"] >= 0 and 0 <= s["clipped_fraction"] <= 1, s
print("ok: epsilon", " ".join("%.3f" % e for e in eps), "sigma %.3f" % steps[0]["noise_multiplier"],
      "batches", [s["examples"] for s in steps])
PY
"$DSTRAIN" ckpt inspect run/checkpoints/step-6 --key-file export.key > inspect.txt
grep -q "privacy: DP-SGD epsilon .* after 6 steps (noise multiplier .*poisson sampling)" \
  inspect.txt || { cat inspect.txt; fail "ckpt inspect shows no privacy"; }
echo "ok: $(grep 'privacy:' inspect.txt | sed 's/^ *//')"
# checkpoint.encrypt_exports: the PEFT adapter, the merged model, model.h5 and the provenance
# beside them are sealed, and the
# merged model evaluates with the key.
for f in run/adapter/adapter_model.safetensors run/adapter/adapter_config.json run/provenance.json \
  run/merged/config.json run/merged/provenance.json run/model.h5; do
  test "$(head -c 7 "$f")" = "DSTAES1" || fail "$f is not sealed"
done
"$DSTRAIN" eval --model run/merged --key-file export.key --text corpus.txt --tokenizer byte \
  > eval_merged.txt 2>&1 || { cat eval_merged.txt; fail "eval of the sealed merged model"; }
echo "ok: sealed exports; merged model $(grep -o 'loss [0-9.]*' eval_merged.txt | head -1)"

expect_error 2 "privacy: DP-SGD does not combine with parallel.tp > 1" \
  "$DSTRAIN" train private.yaml parallel.tp=2 parallel.dp=1
expect_error 2 "privacy.sampling 'uniform' is not one of poisson, shuffle" \
  "$DSTRAIN" train private.yaml privacy.sampling=uniform
expect_error 2 "privacy.max_grad_norm is required" \
  "$DSTRAIN" train private.yaml privacy.max_grad_norm=0
# Encrypted prepared corpus.
head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 64 > corpus.key
mkdir -p in && head -400 corpus.txt > in/notes.txt
cat > sealed.yaml <<'YAML'
model: {vocab_size: 259, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,
        num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}
prepare: {inputs: [in], output_dir: sealed, seq_len: 32, documents_per_shard: 100, text_split: line,
          encryption: {key_file: corpus.key}}
data: {prepared: sealed, seq_len: 32, encryption: {key_file: corpus.key}}
train: {steps: 2, micro_batch_size: 2, eval_every: 0, eval_batches: 1, output_dir: sealed_run,
        progress: lines}
checkpoint: {at_end: true}
YAML
"$DSTRAIN" prepare sealed.yaml > prepare.log 2>&1 || { cat prepare.log; fail "encrypted prepare"; }
first_line=$(head -1 in/notes.txt | cut -c1-40)
if grep -rqF -- "$first_line" sealed; then fail "plaintext of the corpus in the encrypted shards"; fi
"$DSTRAIN" train sealed.yaml > sealed_train.log 2>&1 || { cat sealed_train.log; fail "training on the encrypted corpus"; }
"$DSTRAIN" eval --model "sealed_run/checkpoints/step-2" --data sealed --key-file corpus.key \
  > eval.txt 2>&1 || { cat eval.txt; fail "eval --data on the encrypted corpus"; }
grep -q "loss" eval.txt || { cat eval.txt; fail "eval printed no loss"; }
echo "ok: encrypted corpus trained on and evaluated ($(grep -o 'loss [0-9.]*' eval.txt | head -1))"
# Encrypted export: the same loss as the plaintext export, with the key only.
"$DSTRAIN" ckpt convert sealed_run/checkpoints/step-2 --to hf plain_hf > /dev/null
"$DSTRAIN" ckpt convert sealed_run/checkpoints/step-2 --to hf sealed_hf \
  --encrypt-key-file corpus.key > convert.txt || fail "encrypted export"
grep -q "(hf, encrypted)" convert.txt || { cat convert.txt; fail "convert did not say encrypted"; }
if grep -q '"hidden_size"' sealed_hf/config.json; then fail "plaintext config.json in the encrypted export"; fi
"$DSTRAIN" eval --model plain_hf --data sealed --key-file corpus.key > eval_plain.txt 2>&1
"$DSTRAIN" eval --model sealed_hf --data sealed --key-file corpus.key > eval_sealed.txt 2>&1 ||
  { cat eval_sealed.txt; fail "eval of the encrypted export"; }
test "$(grep -o 'loss [0-9.]*' eval_plain.txt)" = "$(grep -o 'loss [0-9.]*' eval_sealed.txt)" ||
  fail "encrypted export: $(cat eval_sealed.txt) vs $(cat eval_plain.txt)"
echo "ok: encrypted export evaluates as the plaintext one ($(grep -o 'loss [0-9.]*' eval_sealed.txt))"
expect_error 2 "absent.key" \
  "$DSTRAIN" ckpt convert sealed_run/checkpoints/step-2 --to hf never_hf --encrypt-key-file absent.key
test ! -e never_hf || fail "a failed encrypted convert wrote never_hf"
expect_error 2 "sealed_hf is an encrypted export; give its key" \
  "$DSTRAIN" eval --model sealed_hf --text in/notes.txt --tokenizer byte
expect_error 1 "manifest.json: the prepared corpus is encrypted" \
  "$DSTRAIN" eval --model "sealed_run/checkpoints/step-2" --data sealed
python3 - <<'PY'
data = bytearray(open("sealed/train-00000.h5", "rb").read())
data[len(data) // 2] ^= 1
open("sealed/train-00000.h5", "wb").write(bytes(data))
PY
expect_error 1 "train-00000.h5: authentication failed" "$DSTRAIN" train sealed.yaml
echo "PASS"

#!/usr/bin/env bash
# What dstrain writes, read by the libraries users serve and inspect models with (PyPI's
# transformers, peft and safetensors, pinned in scripts/requirements.txt), and what they write,
# read by dstrain; logits compared with `dstrain eval --dump-logits` (tests/interop/hf_reference.py):
#   - tiny-llama-2 (a real LLaMA-2 checkpoint, F16) and transformers' sharded re-save of it;
#   - Llama models trained by dstrain (GQA untied under ZeRO-3; tied embeddings under tp2, whose
#     vocabulary is padded) exported with `ckpt convert --to hf`;
#   - our LoRA and prefix-tuning exports loaded with PeftModel;
#   - a LoRA adapter made by PEFT (B not zero) in `dstrain eval --adapter` and, continued with
#     `train.init_adapter` under tp2, exported back unchanged;
#   - GGUF exports (f32, f16, bf16, q8_0) of a dstrain-trained model with the deepseek-coder
#     tokenizer embedded, read back by the `gguf` library;
#   - `dstrain generate --greedy` (key/value cache) against transformers' generate(do_sample=False)
#     for tiny-llama-2 (also --batch-size 3), a dstrain-trained model (its HF export and its
#     checkpoint) and PEFT's LoRA.
# usage: test_hf_interop.sh DSTRAIN WORKDIR SOURCE_DIR SHARED_DATA
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
SHARED=$4
source "$SRC/tests/cli/lib.sh"
interop_begin "$SRC" "$WORK" "transformers, peft, safetensors"
TINY=$SHARED/models/tiny-llama-2
ref() { "$PY" "$SRC/tests/interop/hf_reference.py" "$@" 2> ref.err || { cat ref.err; exit 1; }; }
# ids MAX COUNT SEED > file: random token ids below MAX.
ids() { "$PY" -c "import random; r = random.Random($3); print(' '.join(str(r.randrange($1)) for _ in range($2)))"; }
# ours MODEL OUT [eval options]: our logits of ids.txt (windows of 32) into OUT.
ours() {
  local model=$1 out=$2
  shift 2
  "$DSTRAIN" eval --model "$model" --ids ids.txt --seq-len 32 --dump-logits "$out" "$@" \
    > "$out.log" 2>&1 || { cat "$out.log"; fail "dstrain eval --model $model $*"; }
}
mpi() { mpirun -np 2 --oversubscribe --bind-to none "$DSTRAIN" "$@"; }

# A real LLaMA-2 checkpoint, and transformers' own sharded save of it (index + 3 files).
ids 32000 100 1 > ids.txt
ours "$TINY" tiny.safetensors
ref logits "$TINY" tiny.safetensors
ref save-sharded "$TINY" sharded
test -f sharded/model.safetensors.index.json || fail "transformers wrote no sharded index"
ours sharded sharded.safetensors
ref logits sharded sharded.safetensors

# Models trained by dstrain, exported to Hugging Face folders.
"$DSTRAIN" synth corpus.txt --docs 400 --seed 5 > /dev/null
ids 259 100 2 > ids.txt
COMMON=(data.train_path=corpus.txt train.steps=3 train.eval_every=0 data.seq_len=32
  model.hidden_size=64 model.intermediate_size=128 model.num_hidden_layers=2)
mpi train "$SRC/configs/quickstart.yaml" "${COMMON[@]}" train.output_dir=untied \
  parallel.zero_stage=3 2> untied.log || { cat untied.log; fail "training (ZeRO-3)"; }
mpi train "$SRC/configs/quickstart.yaml" "${COMMON[@]}" train.output_dir=tied parallel.dp=1 \
  parallel.tp=2 model.tie_word_embeddings=true 2> tied.log || { cat tied.log; fail "training (tp2)"; }
for run in untied tied; do
  "$DSTRAIN" ckpt convert "$run/checkpoints/step-3" "$run/hf" --to hf > /dev/null
  ours "$run/hf" "$run.safetensors"
  ref logits "$run/hf" "$run.safetensors"
done
# Our sharded export (index + shards) in transformers and back in dstrain.
"$DSTRAIN" ckpt convert untied/checkpoints/step-3 untied/sharded --to hf --max-shard-mb 0.05 \
  > /dev/null
test -f untied/sharded/model.safetensors.index.json -a -f untied/sharded/model-00002-of-*.safetensors ||
  fail "no shards written"
test ! -e untied/sharded/model.safetensors || fail "a sharded export also wrote model.safetensors"
ours untied/sharded untied-sharded.safetensors
ref logits untied/sharded untied-sharded.safetensors

# GGUF for llama.cpp: a model with deepseek-coder's vocabulary, from its checkpoint and from its
# Hugging Face export.
TOK=$SHARED/tokenizers/deepseek-coder/tokenizer.json
mpi train "$SRC/configs/quickstart.yaml" "${COMMON[@]}" train.output_dir=v32k train.steps=1 \
  model.vocab_size=32022 2> v32k.log || { cat v32k.log; fail "training (vocab 32022)"; }
"$DSTRAIN" ckpt convert v32k/checkpoints/step-1 v32k/hf --to hf > /dev/null
for dtype in f32 f16 bf16 q8_0; do
  "$DSTRAIN" ckpt convert v32k/hf --to gguf "v32k/$dtype.gguf" --dtype "$dtype" \
    --tokenizer "$TOK" --name tiny > /dev/null || fail "GGUF export ($dtype)"
  ref gguf "v32k/$dtype.gguf" v32k/hf --tokenizer "$TOK" --dtype "$dtype" --pre deepseek-coder
done
"$DSTRAIN" ckpt convert v32k/checkpoints/step-1 --to gguf v32k/ckpt.gguf --dtype f32 \
  --tokenizer "$TOK" --name tiny > /dev/null
cmp v32k/ckpt.gguf v32k/f32.gguf || fail "the GGUF of the checkpoint and of its export differ"
expect_error 2 "q8_0 needs rows that are a multiple of 32" "$DSTRAIN" ckpt convert "$TINY" \
  --to gguf bad.gguf --dtype q8_0
expect_error 2 "deepseek-coder/tokenizer.json: token '.*' has id [0-9]*, outside the model's vocabulary of 259" \
  "$DSTRAIN" ckpt convert untied/hf --to gguf bad.gguf --tokenizer "$TOK"
test ! -e bad.gguf || fail "a failed export left bad.gguf"

# Our adapters in PEFT.
sed "s#SHARED#$SHARED#g" "$SRC/tests/interop/lora_recipe.yaml" > lora.yaml
mpi train lora.yaml 2> lora.log || { cat lora.log; fail "LoRA training"; }
mpi train lora.yaml train.output_dir=prefix "adapters=[{type: prefix, num_virtual_tokens: 4}]" \
  2> prefix.log || { cat prefix.log; fail "prefix-tuning training"; }
for run in lora_run prefix; do
  ours "$run/checkpoints/step-4" "$run.safetensors"
  ref logits "$TINY" "$run.safetensors" --adapter "$run/adapter"
  # The adapter matters: without it the logits are not the base model's.
  "$PY" "$SRC/tests/interop/hf_reference.py" logits "$TINY" "$run.safetensors" > base.txt 2>&1 &&
    fail "$run's logits equal the base model's: the adapter check proves nothing"
done

# PEFT's adapter in dstrain: evaluated, and continued (tp2, a negligible learning rate) then
# exported back.
ref make-lora "$TINY" peft_lora
ours "$TINY" peft.safetensors --adapter peft_lora
ref logits "$TINY" peft.safetensors --adapter peft_lora
mpi train lora.yaml train.output_dir=continued train.init_adapter=peft_lora adapters=[] \
  parallel.dp=1 parallel.tp=2 optim.lr=1e-12 train.steps=1 2> continued.log ||
  { cat continued.log; fail "training from a PEFT adapter"; }
ref same-tensors continued/adapter/adapter_model.safetensors peft_lora/adapter_model.safetensors \
  --tol 1e-6
# Greedy generation.
printf '1 450 4996 17354\n1 15043 29892 3186 338\n3 7 9\n' > prompts32000.txt
printf '10 200 35 17 99\n72 101 108 108 111\n' > prompts259.txt
generated() {  # generated OUT MODEL PROMPTS [options]: dstrain's greedy ids of each prompt
  local out=$1 model=$2 prompts=$3
  shift 3
  "$DSTRAIN" generate --model "$model" --ids "$prompts" --greedy --max-new-tokens 24 \
    --print-ids "$@" > "$out" 2> "$out.log" || { cat "$out.log"; fail "dstrain generate $model"; }
}
generated gen_tiny.txt "$TINY" prompts32000.txt
ref generate "$TINY" prompts32000.txt gen_tiny.txt --max-new-tokens 24
# The three prompts (4, 5 and 3 tokens) decoded together, left-padded: the same ids.
generated gen_tiny_batched.txt "$TINY" prompts32000.txt --batch-size 3
ref generate "$TINY" prompts32000.txt gen_tiny_batched.txt --max-new-tokens 24
generated gen_untied.txt untied/hf prompts259.txt
ref generate untied/hf prompts259.txt gen_untied.txt --max-new-tokens 24
generated gen_untied_ckpt.txt untied/checkpoints/step-3 prompts259.txt
cmp gen_untied.txt gen_untied_ckpt.txt || fail "generate from the checkpoint and its export differ"
generated gen_peft.txt "$TINY" prompts32000.txt --adapter peft_lora
ref generate "$TINY" prompts32000.txt gen_peft.txt --max-new-tokens 24 --adapter peft_lora
# Prefix tuning: the prefix sits in the key/value cache before the prompt (the reference runs a
# full forward per step: transformers' generate() leaves PEFT's prefix out of its cache).
generated gen_prefix.txt prefix/checkpoints/step-4 prompts32000.txt
ref generate "$TINY" prompts32000.txt gen_prefix.txt --max-new-tokens 24 --adapter prefix/adapter \
  --forward-loop
cmp -s gen_prefix.txt gen_tiny.txt && fail "the prefix did not change the generated ids"
grep -q "decode 23 tokens in .* tokens/s" gen_tiny.txt.log || fail "no speed line on stderr"
# Text out, and a stop string cuts it where the string first appears.
"$DSTRAIN" generate --model untied/hf --tokenizer byte --prompt "Hello" --greedy \
  --max-new-tokens 24 > text.txt 2> /dev/null || fail "generate with text out"
stop=$(head -c 6 text.txt | tail -c 2)
"$DSTRAIN" generate --model untied/hf --tokenizer byte --prompt "Hello" --greedy \
  --max-new-tokens 24 --stop "$stop" > stopped.txt 2> stopped.log || fail "generate --stop"
"$PY" - "$stop" << 'PY' || fail "--stop did not cut the text before '$stop'"
import sys
stop = sys.argv[1].encode("utf-8", "surrogateescape")
text, stopped = open("text.txt", "rb").read(), open("stopped.txt", "rb").read()
assert stopped == text[:text.index(stop)] + b"\n", (text, stopped)
PY
grep -q "stop: stop" stopped.log || fail "the stop string did not end the generation"
# A text prompt starts with BOS when the model's tokenizer_config.json says add_bos_token.
cp -r untied/hf bos_model
printf '{"add_bos_token": true, "bos_token": "<|bos|>"}\n' > bos_model/tokenizer_config.json
printf '256 72 105\n' > bos_ids.txt
printf '72 105\n' > plain_ids.txt
for model in bos_model untied/hf; do
  "$DSTRAIN" generate --model "$model" --tokenizer byte --prompt "Hi" --greedy \
    --max-new-tokens 24 --print-ids 2> /dev/null > "$(basename "$model").text_ids" ||
    fail "generate --prompt ($model)"
done
generated bos_expected.txt untied/hf bos_ids.txt
generated plain_expected.txt untied/hf plain_ids.txt
cmp -s bos_expected.txt plain_expected.txt && fail "BOS does not change this model's output: the check proves nothing"
cmp -s bos_model.text_ids bos_expected.txt || fail "add_bos_token: the prompt did not start with BOS"
cmp -s hf.text_ids plain_expected.txt || fail "without tokenizer_config.json a BOS was added"
ids 259 300 3 > long_prompt.txt
expect_error 2 "the prompt has 300 tokens, more than the model's max_position_embeddings 256" \
  "$DSTRAIN" generate --model untied/hf --ids long_prompt.txt --print-ids
expect_error 2 "--batch-size must be at least 1, got 0" \
  "$DSTRAIN" generate --model untied/hf --ids prompts259.txt --print-ids --batch-size 0
expect_error 2 "--device must be auto, cpu or cuda, got 'tpu'" \
  "$DSTRAIN" generate --model untied/hf --ids prompts259.txt --print-ids --device tpu
expect_error 2 "--device must be auto, cpu or cuda, got 'gpu'" \
  "$DSTRAIN" eval --model untied/hf --ids prompts259.txt --device gpu
if ! nvidia-smi -L > /dev/null 2>&1; then
  expect_error 2 "--device 'cuda': no CUDA device is visible" \
    "$DSTRAIN" generate --model untied/hf --ids prompts259.txt --print-ids --device cuda
fi

expect_error 2 "adapters\[0\].r: 8 differs from .*peft_lora/adapter_config.json's 4" \
  "$DSTRAIN" train lora.yaml parallel.dp=1 train.init_adapter=peft_lora \
  "adapters=[{type: lora, r: 8, alpha: 8, target_modules: [q_proj, v_proj, down_proj]}]"
expect_error 1 "peft_lora/adapter_model.safetensors: tensor '.*q_proj.lora_A.weight' has shape \[4, 8\], the model expects \[4, 64\]" \
  "$DSTRAIN" eval --model untied/hf --adapter peft_lora --ids prompts259.txt
expect_error 2 "--adapter goes with a Hugging Face --model" "$DSTRAIN" eval \
  --model lora_run/checkpoints/step-4 --adapter peft_lora --ids ids.txt
echo "Hugging Face interop: all checks passed"

#!/usr/bin/env bash
# The deepseek_v2 / deepseek_v3 families against transformers' DeepseekV2ForCausalLM /
# DeepseekV3ForCausalLM (tests/interop/deepseek_reference.py makes tiny random models):
#   - logits within 1e-4 in fp32 for V3 (q_lora, interleaved and half-split rotary, YaRN) and V2
#     (plain q_proj, YaRN, group_limited_greedy and greedy routing);
#   - fused expert tensors (transformers v5 names) and a multi-token-prediction layer on import;
#   - a V3 model trained by dstrain (dp2, ZeRO-3) from the transformers one, exported with
#     `ckpt convert --to hf`, loaded by transformers with our logits;
#   - `dstrain generate --greedy` (compressed MLA cache) equal to transformers' generate(), one
#     prompt at a time and three of different lengths at once (--batch-size 3, left-padded);
#   - bad input: a missing expert tensor, topk_group > n_group, unknown topk_method/scoring_func.
# usage: test_deepseek_interop.sh DSTRAIN WORKDIR SOURCE_DIR
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
source "$SRC/tests/cli/lib.sh"
interop_begin "$SRC" "$WORK" "transformers"
run_py() { "$PY" "$@" 2> py.err > py.out || { cat py.err py.out; exit 1; }; cat py.out; }
make_model() { run_py "$SRC/tests/interop/deepseek_reference.py" make "$@"; }
ref() { run_py "$SRC/tests/interop/hf_reference.py" "$@"; }
ours() {  # ours MODEL OUT: our logits of ids.txt (windows of 32) into OUT
  "$DSTRAIN" eval --model "$1" --ids ids.txt --seq-len 32 --dump-logits "$2" > "$2.log" 2>&1 ||
    { cat "$2.log"; fail "dstrain eval --model $1"; }
}
"$PY" -c "import random; r = random.Random(4); print(' '.join(str(r.randrange(259)) for _ in range(96)))" > ids.txt

# Logits of transformers' models.
make_model v3 v3 > /dev/null
make_model v3 v3_yarn --yarn --seed 5 > /dev/null
make_model v3 v3_half --no-interleave --seed 6 > /dev/null
make_model v2 v2_yarn --yarn --no-q-lora --seed 7 > /dev/null
make_model v2 v2_greedy --topk-method greedy --seed 8 > /dev/null
for model in v3 v3_yarn v3_half v2_yarn v2_greedy; do
  ours "$model" "$model.safetensors"
  ref logits "$model" "$model.safetensors"
done

# Fused experts and an MTP layer: the same logits as the per-expert folder.
run_py "$SRC/tests/interop/deepseek_reference.py" fuse v3 v3_fused > /dev/null
ours v3_fused fused.safetensors
ref same-tensors fused.safetensors v3.safetensors

# Trained by dstrain from the transformers model (dp2, ZeRO-3), exported, read by transformers.
"$DSTRAIN" synth corpus.txt --docs 300 --seed 5 > /dev/null
cat > finetune.yaml <<'YAML'
model: {hf_config: v3/config.json}
parallel: {dp: 2, zero_stage: 3}
optim: {lr: 1.0e-3}
data: {train_path: corpus.txt, seq_len: 32}
train: {steps: 3, micro_batch_size: 4, eval_every: 0, log_every: 1, init_from: v3,
        output_dir: trained}
moe: {bias_update_rate: 0.001}
YAML
mpirun -np 2 --oversubscribe --bind-to none "$DSTRAIN" train finetune.yaml 2> trained.log ||
  { cat trained.log; fail "training deepseek_v3 from a transformers model"; }
grep -q '"expert_load_max_over_mean":' trained/metrics.jsonl ||
  fail "no expert-load statistics in trained/metrics.jsonl"
grep -q "tensors of layers past num_hidden_layers" trained.log &&
  fail "an info line about MTP tensors where there are none"
"$DSTRAIN" train finetune.yaml parallel.dp=1 parallel.zero_stage=0 train.steps=1 \
  train.init_from=v3_fused model.hf_config=v3_fused/config.json train.output_dir=fused_run \
  2> fused_run.log || { cat fused_run.log; fail "training from fused experts"; }
grep -q "2 tensors of layers past num_hidden_layers=3 (multi-token prediction)" fused_run.log ||
  { cat fused_run.log; fail "no info line about the MTP layer's tensors"; }
"$DSTRAIN" ckpt convert trained/checkpoints/step-3 trained/hf --to hf > /dev/null
ours trained/hf trained.safetensors
ref logits trained/hf trained.safetensors
"$PY" -c "
from safetensors.torch import load_file
a, b = load_file('trained.safetensors'), load_file('v3.safetensors')
assert (a['logits'] - b['logits']).abs().max() > 1e-3, 'training changed nothing'"

# Greedy generation with the compressed cache, one prompt at a time and (prompts of different
# lengths, left-padded) three at once: both equal transformers'.
printf '10 200 35 17 99\n72 101 108 108 111\n3 7 9\n' > prompts.txt
for model in v3_yarn v2_yarn; do
  for batch in 1 3; do
    "$DSTRAIN" generate --model "$model" --ids prompts.txt --greedy --max-new-tokens 20 \
      --print-ids --batch-size $batch > "gen_$model.$batch.txt" 2> "gen_$model.log" ||
      { cat "gen_$model.log"; fail "generate $model --batch-size $batch"; }
    ref generate "$model" prompts.txt "gen_$model.$batch.txt" --max-new-tokens 20
  done
done

# GGUF for llama.cpp (`deepseek2`): V3 (routing without group limits: llama.cpp builds before
# late 2025 have none) and V2, read back by the `gguf` library.
make_model v3 v3_flat --n-group 1 --topk-group 1 --seed 9 > /dev/null
for model in v3_flat v2_greedy; do
  "$DSTRAIN" ckpt convert "$model" "$model.gguf" --to gguf --dtype f32 > /dev/null ||
    fail "GGUF export of $model"
  run_py "$SRC/tests/interop/deepseek_reference.py" check-gguf "$model.gguf" "$model"
done
for model in v3 v3_fused; do  # fused experts and an MTP layer: the same file
  "$DSTRAIN" ckpt convert "$model" "$model.gguf" --to gguf --dtype f16 --name m > /dev/null ||
    fail "GGUF export of $model"
done
cmp v3.gguf v3_fused.gguf || fail "the GGUF of fused experts differs from the per-expert one's"

# Bad input: one line naming the file and the key.
cp -r v3 broken
"$PY" - <<'PYEOF'
from safetensors.torch import load_file, save_file
t = load_file("broken/model.safetensors")
del t["model.layers.2.mlp.experts.5.up_proj.weight"]
save_file(t, "broken/model.safetensors", metadata={"format": "pt"})
PYEOF
expect_error() {  # expect_error PATTERN COMMAND...: fails unless COMMAND fails with PATTERN
  local pattern=$1
  shift
  if "$@" > bad.out 2> bad.err; then fail "$* succeeded"; fi
  grep -q -- "$pattern" bad.err || { cat bad.err; fail "no '$pattern' in the error of $*"; }
  test "$(grep -c . bad.err)" -le 2 || { cat bad.err; fail "more than a one-line error: $*"; }
}
expect_error "broken: no tensor 'model.layers.2.mlp.experts.5.up_proj.weight'" \
  "$DSTRAIN" eval --model broken --ids ids.txt --seq-len 32
expect_error "GGUF export: llama.cpp's deepseek2 takes a plain q_proj (model.q_lora_rank null) exactly when the model has 27 layers" \
  "$DSTRAIN" ckpt convert v2_yarn v2_yarn.gguf --to gguf
test ! -e v2_yarn.gguf || fail "a refused GGUF export left a file"
# LoRA trains DeepSeek's projections; prefix tuning (MLA caches a latent) is refused by name.
cp finetune.yaml adapters.yaml
printf 'adapters:\n  - {type: lora, r: 4, alpha: 8, target_modules: [q_b_proj, kv_b_proj, o_proj]}\n' >> adapters.yaml
"$DSTRAIN" train adapters.yaml parallel.dp=1 parallel.zero_stage=0 train.steps=2 \
  train.output_dir=lora_run 2> lora.log || { cat lora.log; fail "LoRA on deepseek_v3"; }
printf 'adapters:\n  - {type: prefix, num_virtual_tokens: 4}\n' > prefix_only.yaml
sed '/^adapters:/,$d' adapters.yaml > prefix.yaml && cat prefix_only.yaml >> prefix.yaml
expect_error "prefix tuning is not implemented for model type 'deepseek_v3'" \
  "$DSTRAIN" train prefix.yaml parallel.dp=1 parallel.zero_stage=0 train.output_dir=prefix_run
edit_config() {  # edit_config KEY JSON_VALUE: edited/ is v3/ with config.json's KEY set
  rm -rf edited && cp -r v3 edited
  "$PY" - "$1" "$2" <<'PYEOF'
import json, sys
config = json.load(open("edited/config.json"))
config[sys.argv[1]] = json.loads(sys.argv[2])
json.dump(config, open("edited/config.json", "w"))
PYEOF
}
for edit in 'topk_group|3|topk_group (3) must be in 1..2' \
  'topk_method|"x"|topk_method '"'x'"' is not known for deepseek_v3' \
  'scoring_func|"softmax"|scoring_func '"'softmax'"' is not known for deepseek_v3' \
  'n_routed_experts|7|n_routed_experts (7) is not divisible by n_group (2)'; do
  IFS='|' read -r key value message <<< "$edit"
  edit_config "$key" "$value"
  expect_error "edited/config.json: model.$message" "$DSTRAIN" eval --model edited --ids ids.txt \
    --seq-len 32
done
echo "deepseek interop: all checks passed"

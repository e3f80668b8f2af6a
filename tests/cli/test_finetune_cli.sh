#!/usr/bin/env bash
# Fine-tuning through the CLI: `dstrain tokenize` against Hugging Face reference ids, `dstrain
# prepare` (PII scrubbed and counted, a second run a no-op), LoRA fine-tuning of tiny-llama-2 on
# 2 ranks under ZeRO-3 with early stopping and keep_best, the PEFT adapter and merged model
# exported, `dstrain eval` giving the same loss for the merged model and the adapter checkpoint,
# and bad inputs as one-line errors naming the file and line.
# usage: test_finetune_cli.sh DSTRAIN WORKDIR SOURCE_DIR SHARED_DATA
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
SHARED=$4
# fail, expect_error EXIT PATTERN COMMAND... (exit status, one "dstrain: error:" line matching).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rm -rf "$WORK" && mkdir -p "$WORK/in" && cd "$WORK"

# tokenize: Hugging Face's ids for gpt2.
GPT2=$SHARED/tokenizers/gpt2/tokenizer.json
printf 'Hello world' | "$DSTRAIN" tokenize --tokenizer "$GPT2" > ids.txt
test "$(cat ids.txt)" = "15496 995" || fail "tokenize gave '$(cat ids.txt)'"
test "$("$DSTRAIN" tokenize --tokenizer "$GPT2" --decode < ids.txt)" = "Hello world" ||
  fail "decode"
printf 'a\nb\n' | "$DSTRAIN" tokenize --tokenizer byte --lines > lines.txt
test "$(cat lines.txt)" = "$(printf '97\n98')" || fail "--lines"

# prepare: a JSONL corpus with planted PII and a duplicate, first in the corpus (the end of a
# shard may fall in the tail that packing drops).
{
  echo '{"text": "Write to anna.scherer@example.org or call +44 20 7946 0958 about badge EMP-004217."}'
  echo '{"text": "Write to anna.scherer@example.org or call +44 20 7946 0958 about badge EMP-004217."}'
  echo '{"text": "The server at 192.168.10.42 took card 4111 1111 1111 1111 for the order."}'
  head -300 "$SHARED/corpus/war_and_peace.jsonl"
} > in/book.jsonl
sed "s#SHARED#$SHARED#g" "$SRC/tests/cli/finetune_recipe.yaml" > ft.yaml
"$DSTRAIN" prepare ft.yaml > prepare.txt 2>&1 || { cat prepare.txt; fail "prepare"; }
grep -q "card_number 1 email 1 employee_id 1 ip_address 1 phone 1" prepare.txt ||
  { cat prepare.txt; fail "PII counts"; }
grep -q "1 exact duplicates" prepare.txt || { cat prepare.txt; fail "duplicate not removed"; }
# What training will read: the shards decoded back to text by our own reader and tokenizer. No
# planted e-mail, phone, IP, card or badge number survives; every placeholder stands in its
# sentence. The same check on a corpus prepared without scrubbing finds them (it can fail).
SECRETS=("anna.scherer@example.org" "7946 0958" "192.168.10.42" "4111 1111 1111 1111" "EMP-004217")
SCRUBBED=("Write to <EMAIL> or call <PHONE> about badge <EMPLOYEE_ID>."
  "The server at <IP_ADDRESS> took card <CARD_NUMBER> for the order.")
decoded_secrets() {
  "$DSTRAIN" tokenize --tokenizer byte --decode --prepared "$1" > "$1.txt" ||
    fail "decoding $1"
  grep -q "Anna Pavlovna" "$1.txt" || fail "$1 does not decode to the book"
  for secret in "${SECRETS[@]}"; do grep -qF -- "$secret" "$1.txt" && echo "$secret"; done
  return 0
}
leaked=$(decoded_secrets prepared)
[ -z "$leaked" ] || fail "PII reached the prepared shards: $leaked"
for sentence in "${SCRUBBED[@]}"; do
  grep -qF -- "$sentence" prepared.txt || fail "'$sentence' is not in the prepared shards"
done
"$DSTRAIN" prepare ft.yaml prepare.scrub_pii=false prepare.output_dir=unscrubbed \
  > unscrubbed.log 2>&1 || { cat unscrubbed.log; fail "prepare without scrubbing"; }
test "$(decoded_secrets unscrubbed | wc -l)" -eq "${#SECRETS[@]}" ||
  fail "the decoded-shard check does not see PII that was not scrubbed"
echo "ok: no planted PII in the decoded shards, ${#SCRUBBED[@]} scrubbed sentences intact"
# Inode and nanosecond mtime: a rewrite (in place or by rename) within the same second shows too.
before=$(stat -c '%i %y %n' prepared/manifest.json prepared/train-00000.h5)
"$DSTRAIN" prepare ft.yaml > prepare2.txt 2>&1 || { cat prepare2.txt; fail "second prepare"; }
grep -q "shards: 0 written" prepare2.txt || { cat prepare2.txt; fail "second run wrote shards"; }
test "$before" = "$(stat -c '%i %y %n' prepared/manifest.json prepared/train-00000.h5)" ||
  fail "second run touched files"

# LoRA on 2 ranks, ZeRO-3.
mpirun -np 2 --bind-to none "$DSTRAIN" train ft.yaml > train.log 2>&1 ||
  { cat train.log; fail "training"; }
grep -q "adapters: lora" train.log || { cat train.log; fail "no adapter line"; }
test -f run/adapter/adapter_model.safetensors -a -f run/adapter/adapter_config.json ||
  fail "no PEFT adapter"
test -f run/merged/model.safetensors -a -f run/merged/config.json || fail "no merged model"
grep -q '"sha256"' run/adapter/provenance.json && grep -q '"sha256"' run/merged/provenance.json ||
  fail "no provenance beside the exports"
best=$(cat run/checkpoints/best)
test -d "run/checkpoints/$best" || fail "best checkpoint $best pruned"
"$DSTRAIN" eval --model run/merged --data prepared > eval_merged.txt
"$DSTRAIN" eval --model "run/checkpoints/$(cat run/checkpoints/latest)" --data prepared \
  > eval_ckpt.txt
"$DSTRAIN" eval --model "$SHARED/models/tiny-llama-2" --data prepared > eval_base.txt
cat eval_base.txt eval_merged.txt
merged=$(awk '{print $2}' eval_merged.txt)
test "$merged" = "$(awk '{print $2}' eval_ckpt.txt)" || fail "merged model and adapter differ"
awk -v a="$merged" -v b="$(awk '{print $2}' eval_base.txt)" 'BEGIN { exit !(a < b) }' ||
  fail "fine-tuning did not lower the validation loss"

# Bad inputs.
mkdir -p bad
printf '{"text": "fine"}\n{"text": broken\n' > bad/broken.jsonl
expect_error 1 "bad/broken.jsonl:2" "$DSTRAIN" prepare ft.yaml prepare.inputs=bad
printf '{"model": {"type": "Unigram", "vocab": []}}' > unigram.json
expect_error 1 "unigram.json" "$DSTRAIN" tokenize --tokenizer unigram.json < /dev/null
expect_error 2 "prepare.seq_len" "$DSTRAIN" prepare ft.yaml prepare.seq_len=0
expect_error 2 "unknown adapter type 'ia3'" "$DSTRAIN" train ft.yaml parallel.dp=1 \
  "adapters=[{type: ia3}]"
expect_error 2 "no_such" "$DSTRAIN" train ft.yaml parallel.dp=1 train.output_dir=nomatch \
  "adapters=[{type: lora, target_modules: [no_such]}]"
printf '12 7 x9\n' > bad_ids.txt
expect_error 1 "bad_ids.txt: token 2 ('x9') is not a token id" "$DSTRAIN" eval --model run/merged \
  --ids bad_ids.txt
printf '12 99999\n' > big_ids.txt
expect_error 1 "big_ids.txt: token id 99999 is outside the model's vocabulary" "$DSTRAIN" eval \
  --model run/merged --ids big_ids.txt
expect_error 2 "nowhere is neither a checkpoint" "$DSTRAIN" eval --model nowhere --ids big_ids.txt
expect_error 2 "exactly one of" "$DSTRAIN" eval --model run/merged
echo "finetune CLI: all checks passed"

#!/usr/bin/env bash
# Differential test of dstrain's BPE encoder against Hugging Face tokenizers (PyPI, pinned):
# 10,000 generated Unicode-heavy texts per tokenizer in ../shared/data/tokenizers (CJK, emoji,
# combining marks, mixed scripts, digits, whitespace runs, the added tokens), through
# `dstrain tokenize --jsonl` and back with --decode: every id and every decoded text equal
# tokenizers' (tests/interop/tokenizer_cases.py); and chat records through each built-in chat
# template (`dstrain tokenize --chat`) equal transformers' apply_chat_template ids and masks. A difference found here becomes a fixed case in
# tests/data/test_bpe_tokenizer.cpp.
# usage: test_tokenizers_differential.sh DSTRAIN WORKDIR SOURCE_DIR SHARED_DATA [COUNT]
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
SHARED=$4
COUNT=${5:-10000}
source "$SRC/tests/cli/lib.sh"
interop_begin "$SRC" "$WORK" "tokenizers"
CASES="$PY $SRC/tests/interop/tokenizer_cases.py"
found=0
for dir in "$SHARED"/tokenizers/*/; do
  name=$(basename "$dir")
  json=$dir/tokenizer.json
  [ -f "$json" ] || continue
  found=$((found + 1))
  $CASES generate "$json" "$COUNT" 7 "$name" || fail "generating $name cases"
  "$DSTRAIN" tokenize --tokenizer "$json" --jsonl < "$name.jsonl" > "$name.ours" ||
    fail "dstrain tokenize --jsonl ($name)"
  "$DSTRAIN" tokenize --tokenizer "$json" --jsonl --decode < "$name.ours" > "$name.ours.decoded" ||
    fail "dstrain tokenize --jsonl --decode ($name)"
  $CASES compare "$name" "$name.ours" "$name.ours.decoded"
  # Chat records: rendered with each built-in template and tokenized whole, ids and the
  # assistant-token mask as transformers' apply_chat_template(return_assistant_tokens_mask).
  for template in chatml deepseek llama3; do
    $CASES chat "$json" "$template" 100 11 "$name-$template" 2> chat.err ||
      { cat chat.err; fail "transformers chat reference ($name, $template)"; }
    "$DSTRAIN" tokenize --tokenizer "$json" --chat "$template" < "$name-$template.chat.jsonl" \
      > "$name-$template.ours" || fail "dstrain tokenize --chat $template ($name)"
    $CASES compare-chat "$name-$template" "$name-$template.ours"
  done
done
[ "$found" -ge 3 ] || fail "found $found tokenizers under $SHARED/tokenizers, expected 3"
echo "tokenizers differential: all $found tokenizers agree"

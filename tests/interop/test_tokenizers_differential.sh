#!/usr/bin/env bash
# Differential test of dstrain's BPE encoder against Hugging Face tokenizers (PyPI, pinned):
# 10,000 generated Unicode-heavy texts per tokenizer in ../shared/data/tokenizers (CJK, emoji,
# combining marks, mixed scripts, digits, whitespace runs, the added tokens), through
# `dstrain tokenize --jsonl` and back with --decode: every id and every decoded text equal
# tokenizers' (tests/interop/tokenizer_cases.py); and chat records (`dstrain tokenize --chat`)
# equal transformers' apply_chat_template ids and masks: through each built-in chat template, the
# same formats given as .jinja files (our Jinja interpreter, data/jinja_template.h), and three
# real-world style templates read from model folders (tokenizer_config.json or
# chat_template.jinja). A difference found here becomes a fixed case in
# tests/data/test_bpe_tokenizer.cpp or tests/data/test_jinja_template.cpp.
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
    # The same format as a Jinja file, rendered by our interpreter.
    "$DSTRAIN" tokenize --tokenizer "$json" --chat "$name-$template.jinja" \
      < "$name-$template.chat.jsonl" > "$name-$template.jinja.ours" ||
      fail "dstrain tokenize --chat $name-$template.jinja"
    $CASES compare-chat "$name-$template" "$name-$template.jinja.ours"
  done
  # Real-world style templates from model folders: a tokenizer_config.json with the template (a
  # string, or the list form's "default"), or a folder with chat_template.jinja.
  for template in deepseek_v3_style llama2_style chatml_system_style; do
    $CASES chat "$json" "$template" 100 13 "$name-$template" 2> chat.err ||
      { cat chat.err; fail "transformers chat reference ($name, $template)"; }
    spec=$name-$template.model/tokenizer_config.json
    [ -f "$name-$template.model/chat_template.jinja" ] && spec=$name-$template.model
    "$DSTRAIN" tokenize --tokenizer "$json" --chat "$spec" < "$name-$template.chat.jsonl" \
      > "$name-$template.ours" || fail "dstrain tokenize --chat $spec"
    $CASES compare-chat "$name-$template" "$name-$template.ours"
  done
done
[ "$found" -ge 3 ] || fail "found $found tokenizers under $SHARED/tokenizers, expected 3"
echo "tokenizers differential: all $found tokenizers agree"

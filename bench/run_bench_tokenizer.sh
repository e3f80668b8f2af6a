#!/usr/bin/env bash
# Tokenizer throughput (issue 6 target: >= 1 MB/s per core on English text): encodes War and
# Peace with each Hugging Face tokenizer in ../shared/data, 1 thread cold and warm, 2 threads;
# prints MB/s and the ratio to the target.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build --target dst_bench_tokenizer -j2 > /dev/null
SHARED=${DST_SHARED_DATA:-../shared/data}
for name in gpt2 deepseek-coder deepseek-llm; do
  echo "== $name"
  build/dst_bench_tokenizer "$SHARED/tokenizers/$name/tokenizer.json" "$SHARED/corpus/war-and-peace.txt"
done

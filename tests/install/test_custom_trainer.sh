#!/usr/bin/env bash
# Installs the library, builds examples/custom_trainer against the install tree with
# find_package(deepseek_train), and runs it.
# usage: test_custom_trainer.sh BUILD_DIR SOURCE_DIR WORKDIR
set -euo pipefail
BUILD=$1
SRC=$2
WORK=$3
# Fresh configure folders: a cached Torch_DIR from an earlier libtorch must not be reused.
rm -rf "$WORK/prefix" "$WORK/run" "$WORK/build" "$WORK/build-adapter"
mkdir -p "$WORK"
cmake --install "$BUILD" --prefix "$WORK/prefix" > "$WORK/install.log"
launcher=()
if command -v ccache > /dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$SRC/examples/custom_trainer" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$WORK/prefix" "${launcher[@]}" > "$WORK/configure.log"
cmake --build "$WORK/build" -j 2 > "$WORK/build.log"
mkdir -p "$WORK/run" && cd "$WORK/run"
"$WORK/build/custom_trainer" 8 | tee out.log
# All 8 steps ran and the final loss is a finite number (printf prints "nan" or "inf" otherwise),
# the last step's.
awk '/^step [0-9]+ loss / { n++; last = $4 } /^final loss / { final = $3 }
  END { exit !(n == 8 && final ~ /^[0-9]+\.[0-9]+$/ && final == last) }' out.log ||
  { echo "FAIL: custom_trainer: expected 8 steps and a finite final loss"; exit 1; }
# A program registering its own adapter type against the same install.
cmake -S "$SRC/examples/custom_adapter" -B "$WORK/build-adapter" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$WORK/prefix" "${launcher[@]}" > "$WORK/configure-adapter.log"
cmake --build "$WORK/build-adapter" -j 2 > "$WORK/build-adapter.log"
"$WORK/build-adapter/custom_adapter" 5 | tee adapter.log
grep -q "^trainable parameters: 320 of [0-9]" adapter.log ||
  { echo "FAIL: custom_adapter: expected 320 trainable parameters"; exit 1; }
grep -Eq "^final loss [0-9]+\.[0-9]+$" adapter.log ||
  { echo "FAIL: custom_adapter: no finite final loss"; exit 1; }

#!/usr/bin/env bash
# Installs the library, builds examples/custom_trainer against the install tree with
# find_package(deepseek_train), and runs it.
# usage: test_custom_trainer.sh BUILD_DIR SOURCE_DIR WORKDIR
set -euo pipefail
BUILD=$1
SRC=$2
WORK=$3
rm -rf "$WORK/prefix" "$WORK/run"
mkdir -p "$WORK"
cmake --install "$BUILD" --prefix "$WORK/prefix" > "$WORK/install.log"
launcher=()
if command -v ccache > /dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$SRC/examples/custom_trainer" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$WORK/prefix" "${launcher[@]}" > "$WORK/configure.log"
cmake --build "$WORK/build" -j 2 > "$WORK/build.log"
mkdir -p "$WORK/run" && cd "$WORK/run"
"$WORK/build/custom_trainer" 8 | tee out.log
grep -q "final loss" out.log
# A program registering its own adapter type against the same install.
cmake -S "$SRC/examples/custom_adapter" -B "$WORK/build-adapter" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$WORK/prefix" "${launcher[@]}" > "$WORK/configure-adapter.log"
cmake --build "$WORK/build-adapter" -j 2 > "$WORK/build-adapter.log"
"$WORK/build-adapter/custom_adapter" 5 | tee adapter.log
grep -q "trainable parameters: 320 of" adapter.log
grep -q "final loss" adapter.log

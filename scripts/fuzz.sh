#!/usr/bin/env bash
# libFuzzer runs of the library's input parsers (fuzz/CMakeLists.txt builds them with
# ASan + UBSan, without libtorch).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   fuzz every target for SECONDS (default 30), starting
#                                          from fuzz/corpus/<target>/ and fuzz/regressions/<target>/
#                                          copied to a scratch folder (the repository is not
#                                          modified)
#   scripts/fuzz.sh --regressions          run every file of fuzz/regressions/<target>/ and
#                                          fuzz/corpus/<target>/ once through its target (fast,
#                                          deterministic)
#
# Exits non-zero when any target crashes, hangs (-timeout=10 s per input), runs out of memory
# (-rss_limit_mb=2048) or throws anything but a dst::Error; the input that did it is printed
# (fuzz mode keeps it under build-fuzz/artifacts/<target>/). Environment:
#   FUZZ_TARGETS  targets to run (default: all four), e.g. "recipe tokenizer"
#   FUZZ_BUILD    build folder (default: build-fuzz)
#   FUZZ_JOBS     parallel compile jobs (default: 2)
#   FUZZ_MAX_LEN  largest generated input in bytes (default: 8192)
#   FUZZ_SEED     libFuzzer's random seed (default: a new one each run, printed on failure); ctest's
#                 fuzz.run30 fixes it, so a CI run explores the same inputs every time
# Only dependency it may install: clang (apt-get install -y clang) when clang++ is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$(realpath -m "${FUZZ_BUILD:-$ROOT/build-fuzz}")"  # absolute: targets run in a scratch folder
JOBS="${FUZZ_JOBS:-2}"
MAX_LEN="${FUZZ_MAX_LEN:-8192}"
SEED="${FUZZ_SEED:-}"
read -r -a TARGETS <<< "${FUZZ_TARGETS:-recipe safetensors tokenizer checkpoint_manifest}"

mode=fuzz
seconds=30
case "${1:-}" in
  --regressions | -r) mode=regressions ;;
  -h | --help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    [[ "$1" =~ ^[0-9]+$ && "$1" -gt 0 ]] || {
      echo "fuzz.sh: expected a number of seconds or --regressions, got '$1'" >&2
      exit 2
    }
    seconds="$1"
    ;;
esac

# --- toolchain
if ! command -v clang++ > /dev/null; then
  echo "fuzz.sh: clang++ not found; installing clang" >&2
  if [[ $(id -u) -eq 0 ]]; then
    apt-get install -y clang
  else
    sudo apt-get install -y clang
  fi
fi

# --- build
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S "$ROOT/fuzz" -B "$BUILD" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang > /dev/null
fi
cmake --build "$BUILD" -j "$JOBS" > "$BUILD/build.log" 2>&1 || {
  tail -n 40 "$BUILD/build.log" >&2
  echo "fuzz.sh: build failed (full log: $BUILD/build.log)" >&2
  exit 1
}

# Sanitizer settings: abort on the first report, symbolized stacks.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/dst-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${TARGETS[@]}"; do
  binary="$BUILD/${target}_fuzz"
  [[ -x "$binary" ]] || {
    echo "fuzz.sh: no fuzz target '$target' ($binary)" >&2
    exit 2
  }
  corpus="$ROOT/fuzz/corpus/$target"
  regressions="$ROOT/fuzz/regressions/$target"
  dict="$ROOT/fuzz/dict/$target.dict"
  # The targets run in an empty folder: a recipe's relative model.hf_config resolves there.
  work="$scratch/$target/work"
  mkdir -p "$work"
  log="$scratch/$target/log"

  if [[ $mode == regressions ]]; then
    inputs=()
    for dir in "$regressions" "$corpus"; do
      [[ -d "$dir" ]] || continue
      while IFS= read -r -d '' file; do inputs+=("$file"); done \
        < <(find "$dir" -maxdepth 1 -type f ! -name '.*' ! -name 'README*' -print0 | sort -z)
    done
    if ((${#inputs[@]} == 0)); then
      echo "== $target: no inputs"
      continue
    fi
    # One file at a time, so a failure names its input.
    bad=0
    for input in "${inputs[@]}"; do
      if ! (cd "$work" && "$binary" -timeout=10 -rss_limit_mb=2048 "$input") > "$log" 2>&1; then
        echo "== $target: FAILED on $input" >&2
        grep -E "ERROR|FUZZ FAILURE|runtime error|Timeout|out-of-memory" "$log" | head -n 5 >&2 ||
          tail -n 20 "$log" >&2
        bad=1
      fi
    done
    if ((bad)); then
      failed+=("$target")
    else
      echo "== $target: ${#inputs[@]} inputs passed"
    fi
    continue
  fi

  # Fuzz mode: the corpus grows in the scratch copy only.
  mkdir -p "$scratch/$target/corpus"
  cp "$corpus"/* "$scratch/$target/corpus/" 2> /dev/null || true
  if [[ -d "$regressions" ]]; then
    find "$regressions" -maxdepth 1 -type f ! -name 'README*' -exec cp {} "$scratch/$target/corpus/" \;
  fi
  artifacts="$BUILD/artifacts/$target"
  mkdir -p "$artifacts"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$MAX_LEN"
    -print_final_stats=1 -artifact_prefix="$artifacts/")
  [[ -f "$dict" ]] && args+=(-dict="$dict")
  [[ -n "$SEED" ]] && args+=(-seed="$SEED")
  echo "== $target: fuzzing for ${seconds}s"
  if (cd "$work" && "$binary" "${args[@]}" "$scratch/$target/corpus") > "$log" 2>&1; then
    runs=$(grep -oE "stat::number_of_executed_units: [0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
    echo "   ok: $runs executions, corpus $(find "$scratch/$target/corpus" -type f | wc -l) inputs"
  else
    failed+=("$target")
    grep -E "ERROR|FUZZ FAILURE|runtime error|Timeout|out-of-memory|deadly signal" "$log" |
      head -n 10 >&2 || tail -n 20 "$log" >&2
    artifact=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -n 1 |
      sed 's/Test unit written to //' || true)
    grep -m 1 -oE "INFO: Seed: [0-9]+" "$log" | sed 's/INFO: /   /' >&2 || true
    cp "$log" "$artifacts/last-failure.log"
    echo "== $target: FAILED; input: ${artifact:-(none written)}; log: $artifacts/last-failure.log" >&2
    echo "   reproduce (from an empty folder): $binary ${artifact:-<input>}" >&2
    # The input itself, so a failure on a machine whose build folder is gone (CI) can be recreated:
    #   base64 -d > input <<< '...'
    if [[ -n "${artifact:-}" && -f "$artifact" ]]; then
      echo "   input as base64: $(head -c 16384 "$artifact" | base64 -w 0)" >&2
    fi
  fi
done

if ((${#failed[@]})); then
  echo "fuzz.sh: failures in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: all targets passed ($mode)"

#!/usr/bin/env bash
# Bad input to dstrain ends with exactly one "dstrain: error:" line naming the problem and a
# non-zero exit code — never a crash, a stack trace or a hang.
# usage: test_cli_errors.sh DSTRAIN WORKDIR
set -uo pipefail
DSTRAIN=$1
WORK=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
failures=0

# expect_error NAME [--ranks N] EXPECTED_EXIT PATTERN -- command...: check_error of lib.sh (that
# exit status exactly, one "dstrain: error:" line matching PATTERN, no crash); a mismatch is counted.
expect_error() {
  local name=$1 args=()
  shift
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  shift
  printf '%s: ' "$name"
  check_error "${args[@]}" "$@" || failures=$((failures + 1))
}

cat > good.yaml <<'YAML'
model:
  hidden_size: 32
  intermediate_size: 64
  num_hidden_layers: 1
  num_attention_heads: 2
  num_key_value_heads: 1
train:
  steps: 2
  output_dir: out
data:
  train_path: corpus.txt
  seq_len: 16
YAML
printf 'model:\n  hidden_size: 32\n  hiden_size: 3\n' > unknown_key.yaml
printf 'train:\n  steps: many\n' > wrong_type.yaml
printf 'train:\n  steps: 3\n   seed: [1, 2\n' > malformed.yaml
printf 'parallel:\n  tp: 3\n' > tp3.yaml

expect_error "no subcommand" 2 "subcommand" -- "$DSTRAIN"
expect_error "unknown subcommand" 2 "frobnicate" -- "$DSTRAIN" frobnicate
expect_error "missing recipe file" 2 "missing.yaml" -- "$DSTRAIN" train missing.yaml
expect_error "unknown key" 2 "unknown_key.yaml:3: unknown key 'model.hiden_size'" -- "$DSTRAIN" train unknown_key.yaml
expect_error "wrong type" 2 "wrong_type.yaml:2: key 'train.steps' expects an integer" -- "$DSTRAIN" train wrong_type.yaml
# A recipe whose hf_config is a Qwen2-MoE config.json: refused by name, not trained as a Llama.
mkdir -p q
printf '{"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "num_experts": 60}\n' > q/config.json
printf 'model:\n  hf_config: q/config.json\n' > q.yaml
expect_error "another model family" 2 "q/config.json: field 'model_type' is 'qwen2_moe', which no model family here implements" -- \
  "$DSTRAIN" train q.yaml
# A DeepSeek-V2 config.json without num_experts_per_tok (it has no default): one line naming it.
mkdir -p v2
printf '{"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "kv_lora_rank": 512}\n' > v2/config.json
printf 'model:\n  hf_config: v2/config.json\n' > v2.yaml
expect_error "deepseek without experts per token" 2 "v2/config.json: model.num_experts_per_tok (0) must be in 1..64" -- \
  "$DSTRAIN" train v2.yaml
expect_error "malformed yaml" 2 "malformed.yaml:[0-9]*: malformed YAML" -- "$DSTRAIN" train malformed.yaml
expect_error "bad override format" 2 "expected key.path=value" -- "$DSTRAIN" train good.yaml train.steps
expect_error "override unknown key" 2 "unknown key 'train.stepz'" -- "$DSTRAIN" train good.yaml train.stepz=3
expect_error "override wrong type" 2 "expects an integer" -- "$DSTRAIN" train good.yaml train.steps=1.5
expect_error "heads not divisible by tp" 2 "model.num_attention_heads (4) is not divisible by parallel.tp=3" -- "$DSTRAIN" train tp3.yaml
expect_error "layers not divisible into stages" 2 "parallel.pp x parallel.virtual_stages = 4 pipeline stages but only 1 layers" -- "$DSTRAIN" train good.yaml parallel.pp=2 parallel.virtual_stages=2 parallel.schedule=interleaved_1f1b train.grad_accum=2
expect_error "interleaved without virtual stages" 2 "parallel.virtual_stages" -- "$DSTRAIN" train good.yaml parallel.pp=2 parallel.schedule=interleaved_1f1b
expect_error "bad schedule" 2 "parallel.schedule 'zigzag'" -- "$DSTRAIN" train good.yaml parallel.schedule=zigzag
expect_error "unknown param dtype" 2 "precision.param_dtype 'fp8'" -- "$DSTRAIN" train good.yaml precision.param_dtype=fp8
expect_error "bad loss scaler" 2 "precision.loss_scaler.growth_factor must be > 1" -- "$DSTRAIN" train good.yaml precision.param_dtype=fp16 precision.loss_scaler.growth_factor=0.5
expect_error "unknown offload" 2 "optim.offload 'gpu'" -- "$DSTRAIN" train good.yaml optim.offload=gpu
expect_error "bad zero stage" 2 "parallel.zero_stage must be 0, 1, 2 or 3" -- "$DSTRAIN" train good.yaml parallel.zero_stage=4
expect_error "unknown device" 2 "train.device 'tpu' is not one of auto, cpu, cuda" -- "$DSTRAIN" train good.yaml train.device=tpu
expect_error "unknown backend" 2 "comm.backend 'gloo' is not one of auto, mpi, nccl, local" -- "$DSTRAIN" train good.yaml comm.backend=gloo
# This machine has no GPU: asking for one is a one-line error, before any data is read.
if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
  expect_error "cuda without a GPU" 2 "train.device 'cuda': no CUDA device is visible" -- "$DSTRAIN" train good.yaml train.device=cuda
  expect_error "nccl on CPU tensors" 2 "comm.backend 'nccl' moves CUDA tensors, but this run's tensors are on CPU" -- \
    "$DSTRAIN" train good.yaml comm.backend=nccl
fi
expect_error "missing corpus" 1 "corpus.txt" -- "$DSTRAIN" train good.yaml
expect_error "world size mismatch" 2 "does not equal the world size 2" -- \
  mpirun -np 2 --bind-to none "$DSTRAIN" train good.yaml parallel.dp=4

# A runtime error on every rank of an MPI job: each rank names itself, the job ends (MPI_Abort)
# with a non-zero exit instead of leaving ranks waiting in a collective.
expect_error "runtime error under mpirun" --ranks 2 1 "^dstrain: error: rank [01]: .*corpus.txt" -- \
  mpirun -np 2 --bind-to none "$DSTRAIN" train good.yaml parallel.dp=2

# Help and version succeed.
"$DSTRAIN" --help | grep -q "train" || { echo "FAIL --help"; failures=$((failures + 1)); }
"$DSTRAIN" --version | grep -q "dstrain 0\." || { echo "FAIL --version"; failures=$((failures + 1)); }
# Where the CUDA toolkit with NCCL is installed (every development and CI machine here), the build
# has its CUDA/NCCL parts (DST_WITH_CUDA=AUTO), so they compile and link in CI.
if [ -f /usr/local/cuda/include/nccl.h ]; then
  "$DSTRAIN" --version | grep -Eq "libtorch 2\.[0-9.]+, CUDA [0-9]+\.[0-9]+, NCCL [0-9]+\.[0-9]+\.[0-9]+\)" ||
    { echo "FAIL --version: no CUDA/NCCL parts in a build on a machine with them (it says:" \
      "$("$DSTRAIN" --version); the configure line 'CUDA/NCCL parts:' says what was not found)"
      failures=$((failures + 1)); }
fi
"$DSTRAIN" train good.yaml train.steps=7 --print-config | grep -q "steps: 7" ||
  { echo "FAIL --print-config"; failures=$((failures + 1)); }

if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "all CLI error cases passed"

// Fused CPU kernels for the decoder's hot paths, each an autograd function with a hand-written
// backward: the bias-free linear (through kernels::sgemm), RMSNorm, SwiGLU, rotary + causal
// attention (blocked: only the lower-triangular blocks of the scores are computed; large
// probability tensors recomputed in the backward from one log-sum-exp per row) and the summed
// cross-entropy. They replace chains of ATen ops that each made a pass over memory and a
// temporary. They take fp32 or bf16 CPU tensors and compute in fp32: bf16 operands are widened
// inside, results and gradients rounded once to the operands' dtype, and what they keep for the
// backward stays bf16 (so a bf16 model's activations take bf16 memory). The model keeps the ATen
// reference ops for everything else (CUDA, fp16 storage, prefix tuning) and when
// train.kernels=reference. tests/kernels compares every op and gradient with the reference.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "deepseek_train/kernels/attention_budget.h"

namespace dst {

// True when the fused ops handle these tensors: defined, on the CPU, fp32.
bool fused_ops_apply(const at::Tensor& tensor);

// x [..., in] times weight [out, in] transposed: [..., out] (torch.nn.functional.linear, no bias).
// fp32, or bf16 computed in fp32 (operands widened, one rounding of the result and of each
// gradient) — for CPUs without bf16 matrix instructions, where libtorch's bf16 GEMM is ~100x
// slower than its fp32 one (0.7 against 74 GFLOP/s on one AVX2 core, libtorch 2.11).
at::Tensor fused_linear(const at::Tensor& x, const at::Tensor& weight);
// Whether fused_linear is the faster way for these CPU tensors: both fp32, or both bf16 on a CPU
// without AVX512-BF16/AMX-BF16 (where oneDNN's bf16 GEMM is the faster one).
bool fused_linear_applies(const at::Tensor& x, const at::Tensor& weight);
// Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX-BF16, /proc/cpuinfo).
bool cpu_has_bf16_matmul();

// weight * x / sqrt(mean(x^2, -1) + eps), x [..., dim], weight [dim].
at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// silu(gate) * up, same shapes.
at::Tensor fused_swiglu(const at::Tensor& gate, const at::Tensor& up);

// Causal self-attention with rotary embeddings on q and k (positions 0..seq-1, base rope_theta):
// q [batch, seq, heads * head_dim], k and v [batch, seq, kv_heads * head_dim] (grouped-query when
// kv_heads < heads) -> [batch, seq, heads * head_dim], softmax(q k^T / sqrt(head_dim)) v per head.
// For the backward it saves the rotated q and k, v, one log-sum-exp per score row and, while they
// take at most max_kept_probability_bytes (attention_budget.h), the probabilities; above that
// the backward recomputes them, so activations grow with seq instead of seq^2 (the backward then
// needs 2 x seq^2 floats of scratch per thread while it runs).
at::Tensor fused_causal_attention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads, int64_t kv_heads,
    double rope_theta, int64_t max_kept_probability_bytes = kDefaultMaxKeptProbabilityBytes);

// Rotary angles [seq, head_dim/2], fp32: position (first_position + row) times
// theta^(-2i/head_dim). The one computation behind the model's reference rotary and the fused
// attention, so both see the same roundings.
at::Tensor rotary_angles(int64_t first_position, int64_t seq, int64_t head_dim, double theta,
                         at::Device device);
// The same per row: positions [batch, seq] fp32 -> angles [batch, seq, head_dim/2] (left-padded
// batched decoding, model/kv_cache.h).
at::Tensor rotary_angles_at(const at::Tensor& positions, int64_t head_dim, double theta);

// Sum over rows of -log softmax(logits)[label], logits [rows, vocab], labels int64 [rows]; rows
// whose label is ignore_index add nothing. Returns a 0-dim fp32 tensor.
at::Tensor fused_cross_entropy_sum(const at::Tensor& logits, const at::Tensor& labels,
                                   int64_t ignore_index);

}  // namespace dst

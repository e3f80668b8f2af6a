// Row kernels on raw float arrays behind the fused CPU ops (kernels/fused_ops.h): RMSNorm,
// SwiGLU, rotary embedding, causal softmax and cross-entropy, forward and backward. Torch-free;
// built with per-ISA clones (AVX-512, AVX2, baseline) so one binary runs vectorised on each CPU.
#pragma once

#include <cstdint>

namespace dst::kernels {

// RMSNorm over `rows` rows of `dim`: y = w * x / sqrt(mean(x^2) + eps); rstd[r] = that 1/sqrt.
void rms_norm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                      int64_t dim, float eps);
// dx (if not null) from dy; dw_accum (if not null) += sum over rows of dy * x * rstd.
void rms_norm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                       float* dx, float* dw_accum, int64_t rows, int64_t dim);

// out = silu(gate) * up, and its backward (either gradient pointer may be null).
void swiglu_forward(const float* gate, const float* up, float* out, int64_t n);
void swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate,
                     float* dup, int64_t n);

// Rotary embedding of `rows` positions (starting at table row 0) of one head of `dim` features,
// rows `stride` floats apart, in place: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s) with the tables'
// [rows, dim/2] cosines and sines. `inverse` applies the transpose (the backward).
void rotary_rows(float* x, int64_t stride, const float* cos, const float* sin, int64_t rows,
                 int64_t dim, bool inverse);

// Softmax of row[0, valid) in place; row[valid, len) is set to zero (the causal mask). Returns
// the log-sum-exp of the scores, from which softmax_from_lse_row recomputes the row.
float masked_softmax_row(float* row, int64_t valid, int64_t len);
// row[i] = exp(row[i] - lse) over [0, valid), zero up to len: the softmax of scores whose
// log-sum-exp is known (attention's backward recomputes its probabilities this way).
void softmax_from_lse_row(float* row, float lse, int64_t valid, int64_t len);
// Softmax backward in place: ds = p * (dp - sum(p * dp)) over [0, valid); zero up to len.
void masked_softmax_backward_row(const float* p, float* dp, int64_t valid, int64_t len);

// Cross-entropy of one row of logits: returns log-sum-exp; the loss is lse - logits[label].
float log_sum_exp_row(const float* logits, int64_t vocab);
// dlogits = scale * (softmax(logits) - onehot(label)).
void cross_entropy_backward_row(const float* logits, float lse, int64_t label, float scale,
                                float* dlogits, int64_t vocab);

}  // namespace dst::kernels

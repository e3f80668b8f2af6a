// Per-example gradient norms without per-example gradients (DP-SGD's clipping needs ||g_i|| for
// every example i of a batch; "ghost clipping", Li et al. 2022 and Bu et al. 2023). For a layer
// computing y = f(x; W) over a sequence of T positions, example i's weight gradient is a sum over
// its positions of outer products, so its squared norm follows from the layer's inputs and the
// gradients of its outputs alone:
//   linear (y = x Wᵀ + b):   ||Σ_t g_t x_tᵀ||² = Σ_{t,s} (x_t·x_s)(g_t·g_s)   [T² per example],
//                            or the materialised [out, in] gradient when that is cheaper;
//                            bias: ||Σ_t g_t||²;
//   embedding (y_t = E[id_t]): Σ_{t,s: id_t = id_s} g_t·g_s;
//   elementwise scale (RMSNorm's weight, y = x̂ ∘ w): ||Σ_t g_t ∘ x̂_t||².
// Inputs are [examples, T, features] (2-D [examples, features] is T = 1); results are
// [examples] in the inputs' dtype. Exact (no sampling or approximation).
#pragma once

#include <ATen/core/Tensor.h>

namespace dst {

// Squared norms of a linear layer's per-example weight gradients: inputs x [B, T, in], output
// gradients g [B, T, out]. Uses the T x T Gram matrices when T² <= in · out, else the
// per-example [out, in] gradient.
at::Tensor linear_weight_per_example_sq_norms(const at::Tensor& inputs,
                                              const at::Tensor& output_grads);
// The bias of that layer: ||Σ_t g_t||².
at::Tensor bias_per_example_sq_norms(const at::Tensor& output_grads);
// An embedding's per-example weight gradients: ids int64 [B, T], output gradients [B, T, dim].
at::Tensor embedding_per_example_sq_norms(const at::Tensor& ids, const at::Tensor& output_grads);
// An elementwise scale y = x̂ ∘ w: normalised inputs x̂ [B, T, dim], output gradients [B, T, dim].
at::Tensor scale_per_example_sq_norms(const at::Tensor& normalized_inputs,
                                      const at::Tensor& output_grads);

}  // namespace dst

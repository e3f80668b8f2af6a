#include "deepseek_train/privacy/per_example_norms.h"

#include <ATen/ATen.h>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

// [B, features] -> [B, 1, features]; [B, T, features] unchanged.
at::Tensor as_sequences(const at::Tensor& t, const char* what) {
  DST_CHECK(t.dim() == 2 || t.dim() == 3, ConfigError,
            "per-example norms: " << what << " must be [examples, (positions,) features], got "
                                  << t.sizes());
  return t.dim() == 2 ? t.unsqueeze(1) : t;
}

void check_same_positions(const at::Tensor& a, const at::Tensor& b) {
  DST_CHECK(a.size(0) == b.size(0) && a.size(1) == b.size(1), ConfigError,
            "per-example norms: inputs " << a.sizes() << " and output gradients " << b.sizes()
                                         << " differ in examples or positions");
}

}  // namespace

at::Tensor linear_weight_per_example_sq_norms(const at::Tensor& inputs,
                                              const at::Tensor& output_grads) {
  const at::Tensor x = as_sequences(inputs, "inputs");
  const at::Tensor g = as_sequences(output_grads, "output gradients");
  check_same_positions(x, g);
  const int64_t positions = x.size(1), in = x.size(2), out = g.size(2);
  if (positions * positions <= in * out) {
    // Σ_{t,s} (x_t·x_s)(g_t·g_s): the elementwise product of the two Gram matrices, summed.
    const at::Tensor input_gram = at::bmm(x, x.transpose(1, 2));
    const at::Tensor grad_gram = at::bmm(g, g.transpose(1, 2));
    return (input_gram * grad_gram).sum({1, 2});
  }
  return at::bmm(g.transpose(1, 2), x).pow(2).sum({1, 2});  // [B, out, in]
}

at::Tensor bias_per_example_sq_norms(const at::Tensor& output_grads) {
  return as_sequences(output_grads, "output gradients").sum(1).pow(2).sum(1);
}

at::Tensor embedding_per_example_sq_norms(const at::Tensor& ids, const at::Tensor& output_grads) {
  const at::Tensor g = as_sequences(output_grads, "output gradients");
  const at::Tensor tokens = ids.dim() == 1 ? ids.unsqueeze(1) : ids;
  check_same_positions(tokens, g);
  // Positions holding the same token add into one row of the gradient.
  const at::Tensor same = tokens.unsqueeze(2).eq(tokens.unsqueeze(1)).to(g.scalar_type());
  return (same * at::bmm(g, g.transpose(1, 2))).sum({1, 2});
}

at::Tensor scale_per_example_sq_norms(const at::Tensor& normalized_inputs,
                                      const at::Tensor& output_grads) {
  const at::Tensor x = as_sequences(normalized_inputs, "normalised inputs");
  const at::Tensor g = as_sequences(output_grads, "output gradients");
  check_same_positions(x, g);
  return (x * g).sum(1).pow(2).sum(1);
}

}  // namespace dst

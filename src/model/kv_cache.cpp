#include "deepseek_train/model/kv_cache.h"

#include <ATen/ATen.h>

namespace dst {

torch::Tensor padded_positions(const torch::Tensor& left_padding, int64_t past, int64_t seq) {
  const auto options = left_padding.options().dtype(at::kLong);
  const at::Tensor columns = at::arange(past, past + seq, options).unsqueeze(0);  // [1, seq]
  return (columns - left_padding.unsqueeze(1)).clamp_min(0).to(at::kFloat);
}

torch::Tensor padded_attention_mask(const torch::Tensor& left_padding, int64_t past, int64_t seq) {
  const int64_t total = past + seq;
  const auto options = left_padding.options().dtype(at::kLong);
  const at::Tensor query = at::arange(past, total, options).view({1, 1, seq, 1});
  const at::Tensor key = at::arange(0, total, options).view({1, 1, 1, total});
  const at::Tensor pad = key < left_padding.view({-1, 1, 1, 1});  // [batch, 1, 1, total]
  return (key > query) | (pad & (key != query));
}

}  // namespace dst

#include "deepseek_train/optim/grad_clip.h"

#include <ATen/ATen.h>

#include <cmath>

namespace dst {

double squared_norm(const std::vector<at::Tensor>& tensors) {
  double total = 0.0;
  for (const at::Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    // fp32 norm (cascade-summed by ATen, one pass, no fp64 copy), squared and added in fp64.
    const double norm =
        (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ? t : t.to(at::kFloat))
            .norm()
            .item<double>();
    total += norm * norm;
  }
  return total;
}

double clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm,
                      comm::Communicator* shard_group) {
  double total = squared_norm(grads);
  if (shard_group != nullptr && shard_group->size() > 1) {
    at::Tensor buffer = at::full({1}, total, at::kDouble);
    shard_group->all_reduce(buffer, comm::ReduceOp::kSum)->wait();
    total = buffer.item<double>();
  }
  const double norm = std::sqrt(total);
  if (max_norm > 0.0 && std::isfinite(norm) && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    at::NoGradGuard no_grad;
    for (const at::Tensor& g : grads)
      if (g.defined()) g.mul_(scale);
  }
  return norm;
}

}  // namespace dst

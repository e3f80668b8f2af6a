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

double global_grad_norm(const std::vector<at::Tensor>& grads, comm::Communicator* shard_group,
                        double loss_scale) {
  double total = squared_norm(grads);
  if (shard_group != nullptr && shard_group->size() > 1) {
    at::Tensor buffer = at::full({1}, total, at::kDouble);
    shard_group->all_reduce(buffer, comm::ReduceOp::kSum)->wait();
    total = buffer.item<double>();
  }
  return std::sqrt(total) / loss_scale;
}

double gradient_multiplier(double norm, double max_norm, double loss_scale) {
  if (!std::isfinite(norm)) return 1.0;
  double multiplier = loss_scale == 1.0 ? 1.0 : 1.0 / loss_scale;
  if (max_norm > 0.0 && norm > max_norm) multiplier *= max_norm / (norm + 1e-6);
  return multiplier;
}

double clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm,
                      comm::Communicator* shard_group, double loss_scale) {
  const double norm = global_grad_norm(grads, shard_group, loss_scale);
  const double multiplier = gradient_multiplier(norm, max_norm, loss_scale);
  if (multiplier != 1.0) {
    at::NoGradGuard no_grad;
    for (const at::Tensor& g : grads)
      if (g.defined()) g.mul_(multiplier);
  }
  return norm;
}

}  // namespace dst

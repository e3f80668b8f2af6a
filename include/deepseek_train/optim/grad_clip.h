// Global gradient-norm clipping. The norm is that of the whole model's gradient: when parameters
// or gradients are sharded, each rank passes the squared norm of what it owns and the sum is
// all-reduced over the communicator that spans the shards. Gradients may hold loss_scale times
// the true gradient (fp16 loss scaling): norms are reported for the true gradient.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "deepseek_train/comm/communicator.h"

namespace dst {

// Sum of squares (fp64) of the defined tensors.
double squared_norm(const std::vector<at::Tensor>& tensors);

// L2 norm of grads / loss_scale over every shard (`shard_group` null: gradients are complete on
// every rank). Non-finite (inf/NaN) when any element is; the same value on every rank of the group.
double global_grad_norm(const std::vector<at::Tensor>& grads, comm::Communicator* shard_group,
                        double loss_scale = 1.0);

// What the stored gradients must be multiplied by before the update: 1/loss_scale, times
// max_norm / (norm + 1e-6) when max_norm > 0 and the true norm exceeds it
// (torch.nn.utils.clip_grad_norm_'s rule). 1.0 for a non-finite norm (the step is skipped).
double gradient_multiplier(double norm, double max_norm, double loss_scale = 1.0);

// global_grad_norm + gradient_multiplier applied in place; returns the norm.
double clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm,
                      comm::Communicator* shard_group = nullptr, double loss_scale = 1.0);

}  // namespace dst

// Global gradient-norm clipping. The norm is that of the whole model's gradient: when parameters
// or gradients are sharded, each rank passes the squared norm of what it owns and the sum is
// all-reduced over the communicator that spans the shards.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "deepseek_train/comm/communicator.h"

namespace dst {

// Sum of squares (fp64) of the defined tensors.
double squared_norm(const std::vector<at::Tensor>& tensors);

// Returns the global L2 norm before clipping. When max_norm > 0 and the norm exceeds it, scales
// every gradient by max_norm / (norm + 1e-6) (torch.nn.utils.clip_grad_norm_'s rule).
// `shard_group` may be null (gradients are complete on every rank).
double clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm,
                      comm::Communicator* shard_group = nullptr);

}  // namespace dst

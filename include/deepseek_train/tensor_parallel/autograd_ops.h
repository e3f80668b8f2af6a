// Megatron-style tensor-parallel communication as autograd operations, in conjugate pairs:
//   copy_to_tp_region    identity forward  <-> all-reduce backward  (entering column-parallel)
//   reduce_from_tp_region all-reduce forward <-> identity backward   (leaving row-parallel)
//   scatter_to_tp_region split last dim    <-> all-gather backward
//   gather_from_tp_region all-gather last dim <-> split backward
// The group must outlive the autograd graph; with a group of size 1 every op is the identity.
#pragma once

#include <ATen/core/Tensor.h>

#include "deepseek_train/comm/communicator.h"

namespace dst {

at::Tensor copy_to_tp_region(const at::Tensor& x, comm::Communicator& group);
at::Tensor reduce_from_tp_region(const at::Tensor& x, comm::Communicator& group);
at::Tensor scatter_to_tp_region(const at::Tensor& x, comm::Communicator& group);
at::Tensor gather_from_tp_region(const at::Tensor& x, comm::Communicator& group);

// Without autograd: sum over the group (a new tensor) / this rank's slice of the last dim /
// the concatenation of every rank's tensor along the last dim.
at::Tensor all_reduce_sum(const at::Tensor& x, comm::Communicator& group);
at::Tensor split_last_dim(const at::Tensor& x, comm::Communicator& group);
at::Tensor all_gather_last_dim(const at::Tensor& x, comm::Communicator& group);

}  // namespace dst

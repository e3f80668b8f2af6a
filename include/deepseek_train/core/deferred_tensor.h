// Parameters registered without memory ("deferred"): a layer gives its weight its shape and dtype
// but no storage, so building a model allocates nothing. A deferred parameter gets memory and its
// value when it is initialised (CausalLM::initialize_parameter), which the trainer does unit by
// unit as each data-parallel engine takes a unit (train/initial_weights.h): under ZeRO-3 no rank
// ever holds the whole model. Reading a deferred tensor's values is an error; its sizes, dtype
// and numel are valid.
#pragma once

#include <ATen/core/Tensor.h>

namespace dst {

// A float tensor of `shape` (requires_grad false) whose storage holds no bytes.
at::Tensor deferred_tensor(at::IntArrayRef shape, at::ScalarType dtype = at::kFloat);

// Whether `t` has elements but no memory behind them (deferred, or released by ZeRO-3).
bool is_deferred(const at::Tensor& t);

// Gives a deferred `parameter` contiguous memory of its shape (uninitialised values), keeping
// its identity (modules and autograd see the same tensor). No-op when it has memory.
void allocate_deferred(at::Tensor& parameter);

}  // namespace dst

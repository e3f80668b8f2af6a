// Hooks a model calls around each of its sharding units (embedding, each transformer block, final
// norm + head), so a ZeRO-3 engine can gather a unit's parameters just before its forward and
// release them after, and gather them again before its backward.
#pragma once

#include <ATen/core/Tensor.h>

namespace dst {

class UnitHooks {
 public:
  virtual ~UnitHooks() = default;
  // Called before unit `unit`'s forward.
  virtual void before_forward(int unit) = 0;
  // Called with unit `unit`'s output; returns the tensor the model continues with (a hook may
  // register a gradient hook on it to learn when the unit's backward begins).
  virtual at::Tensor after_forward(int unit, const at::Tensor& output) = 0;
};

}  // namespace dst

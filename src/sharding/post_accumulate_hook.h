// Private to the sharding module: calls back once a parameter's gradient has been accumulated
// into param.grad() (a post-hook on its AccumulateGrad node), the moment a data-parallel engine
// may reduce it. (libtorch 2.x's tensor-level post-accumulate-grad hook has a single slot that
// Python's register_post_accumulate_grad_hook owns, so the hook goes on the node instead.)
#pragma once

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <functional>
#include <memory>

#include "deepseek_train/core/error.h"

namespace dst::detail {

class PostAccumulateHook final : public torch::autograd::FunctionPostHook {
 public:
  explicit PostAccumulateHook(std::function<void()> callback) : callback_(std::move(callback)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    callback_();
    return outputs;
  }

 private:
  std::function<void()> callback_;
};

// Registers `callback` after `parameter`'s gradient accumulation. Returns the accumulator node,
// which the caller must keep alive: autograd holds it weakly, and a recreated node has no hook.
inline std::shared_ptr<torch::autograd::Node> add_post_accumulate_hook(
    const at::Tensor& parameter, std::function<void()> callback) {
  auto accumulator = torch::autograd::impl::grad_accumulator(parameter);
  DST_ASSERT(accumulator != nullptr, "no gradient accumulator (does the tensor require grad?)");
  accumulator->add_post_hook(std::make_unique<PostAccumulateHook>(std::move(callback)));
  return accumulator;
}

}  // namespace dst::detail

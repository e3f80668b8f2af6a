#include "deepseek_train/sharding/replicated_engine.h"

#include <ATen/ATen.h>

#include "deepseek_train/optim/grad_clip.h"
#include "deepseek_train/sharding/zero.h"

namespace dst {

ReplicatedEngine::ReplicatedEngine(const DataParallelEngineSpec& spec) {
  at::NoGradGuard no_grad;
  std::vector<NamedParameter> optimizer_parameters;
  for (const auto& unit : spec.units) {
    for (const auto& [name, param] : unit) {
      at::Tensor master;
      if (spec.param_type != param.scalar_type()) {
        // The fp32 initialisation becomes the optimizer's master copy; the model computes with
        // the rounded parameter.
        master = param.detach().clone();
        param.set_data(param.detach().to(spec.param_type));
      }
      parameters_.push_back(param);
      optimizer_parameters.emplace_back(name, param, spec.decays(name, param), master);
    }
  }
  reducer_ = std::make_unique<GradientReducer>(parameters_, spec.dp_group, spec.data_parallel,
                                               spec.reduce_type);
  optimizer_ = std::make_unique<AdamW>(std::move(optimizer_parameters), spec.optim);
}

double ReplicatedEngine::clip_grad_norm(double max_norm, double loss_scale) {
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : parameters_) grads.push_back(p.grad());
  // Gradients are identical on every rank after the all-reduce: no norm reduction needed.
  const double norm = global_grad_norm(grads, /*shard_group=*/nullptr, loss_scale);
  grad_multiplier_ = gradient_multiplier(norm, max_norm, loss_scale);
  return norm;
}

void ReplicatedEngine::step(double lr) {
  optimizer_->step(lr, grad_multiplier_);
  grad_multiplier_ = 1.0;
}

void ReplicatedEngine::describe_layout(MemoryPlanInputs& inputs) const {
  for (int64_t bytes : reducer_->bucket_bytes())
    inputs.gradient_bucket_elements.push_back(bytes / parameters_.front().element_size());
}

std::unique_ptr<DataParallelEngine> make_data_parallel_engine(const DataParallelEngineSpec& spec) {
  if (spec.data_parallel.zero_stage == 0) return std::make_unique<ReplicatedEngine>(spec);
  return std::make_unique<ZeroEngine>(spec);
}

}  // namespace dst

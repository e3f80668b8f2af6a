#include "deepseek_train/sharding/replicated_engine.h"

#include <ATen/ATen.h>

#include "deepseek_train/optim/grad_clip.h"
#include "deepseek_train/sharding/zero.h"

namespace dst {

ReplicatedEngine::ReplicatedEngine(const DataParallelEngineSpec& spec) {
  at::NoGradGuard no_grad;
  std::vector<NamedParameter> optimizer_parameters;
  for (auto unit : spec.units) {
    if (spec.materialize) spec.materialize(unit);
    for (const auto& [name, param] : unit) {
      at::Tensor master;
      if (spec.param_type != param.scalar_type()) {
        // The fp32 initialisation becomes the optimizer's master copy; the model computes with
        // the rounded parameter.
        master = param.detach().clone();
        param.set_data(param.detach().to(spec.param_type));
      }
      parameters_.push_back(param);
      counted_.push_back(!spec.counts_in_norm || spec.counts_in_norm(name));
      optimizer_parameters.emplace_back(name, param, spec.decays(name, param), master);
    }
  }
  first_of_group_ = !spec.dp_group || spec.dp_group->rank() == 0;
  reducer_ = std::make_unique<GradientReducer>(parameters_, spec.dp_group, spec.data_parallel,
                                               spec.reduce_type);
  optimizer_ = std::make_unique<AdamW>(std::move(optimizer_parameters), spec.optim);
}

double ReplicatedEngine::local_grad_squared_norm() {
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < parameters_.size(); ++i)
    if (counted_[i]) grads.push_back(parameters_[i].grad());
  return squared_norm(grads);
}

void ReplicatedEngine::describe_layout(MemoryPlanInputs& inputs) const {
  for (int64_t bytes : reducer_->bucket_bytes())
    inputs.gradient_bucket_elements.push_back(bytes / parameters_.front().element_size());
}

std::unique_ptr<DataParallelEngine> make_data_parallel_engine(const DataParallelEngineSpec& spec) {
  if (spec.data_parallel.zero_stage == 0) return std::make_unique<ReplicatedEngine>(spec);
  return std::make_unique<ZeroEngine>(spec);
}

std::vector<ParameterStateSlice> ReplicatedEngine::state_slices() {
  std::vector<ParameterStateSlice> slices;
  const auto& parameters = optimizer_->parameters();
  for (size_t i = 0; i < parameters.size(); ++i) {
    const NamedParameter& p = parameters[i];
    ParameterStateSlice slice;
    slice.name = p.name;
    slice.end = p.tensor.numel();
    slice.parameter = p.tensor.detach().view({-1});
    slice.master = p.master.defined() ? p.master.view({-1}) : slice.parameter;
    slice.exp_avg = optimizer_->exp_avg()[i].view({-1});
    slice.exp_avg_sq = optimizer_->exp_avg_sq()[i].view({-1});
    if (p.tensor.grad().defined()) slice.gradient = p.tensor.grad().view({-1});
    slice.saved_here = first_of_group_;
    slices.push_back(std::move(slice));
  }
  return slices;
}

void ReplicatedEngine::state_restored() {
  at::NoGradGuard no_grad;
  for (const NamedParameter& p : optimizer_->parameters())
    if (p.master.defined()) p.tensor.detach().copy_(p.master);
}

}  // namespace dst

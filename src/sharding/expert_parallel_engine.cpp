#include "deepseek_train/sharding/expert_parallel_engine.h"

#include <utility>

#include "deepseek_train/core/error.h"

namespace dst {

ExpertParallelEngine::ExpertParallelEngine(std::unique_ptr<DataParallelEngine> dense,
                                           std::unique_ptr<DataParallelEngine> experts,
                                           std::vector<UnitPlacement> units,
                                           comm::CommunicatorPtr ep_group)
    : dense_(std::move(dense)),
      experts_(std::move(experts)),
      units_(std::move(units)),
      ep_group_(std::move(ep_group)) {
  DST_ASSERT(dense_ || experts_, "an expert-parallel engine needs at least one engine");
  DST_ASSERT(ep_group_ != nullptr, "an expert-parallel engine needs its ep group");
  hooked_ = (dense_ && dense_->unit_hooks()) || (experts_ && experts_->unit_hooks());
}

std::vector<DataParallelEngine*> ExpertParallelEngine::engines() const {
  std::vector<DataParallelEngine*> result;
  if (dense_) result.push_back(dense_.get());
  if (experts_) result.push_back(experts_.get());
  return result;
}

void ExpertParallelEngine::zero_grad() {
  for (DataParallelEngine* engine : engines()) engine->zero_grad();
}

void ExpertParallelEngine::set_sync(bool last_micro_batch) {
  for (DataParallelEngine* engine : engines()) engine->set_sync(last_micro_batch);
}

void ExpertParallelEngine::finish_backward() {
  for (DataParallelEngine* engine : engines()) engine->finish_backward();
}

double ExpertParallelEngine::local_grad_squared_norm() {
  double dense = dense_ ? dense_->local_grad_squared_norm() : 0.0;
  if (!experts_) return dense;
  at::Tensor experts = at::full({1}, experts_->local_grad_squared_norm(), at::kDouble);
  if (!experts_->gradients_sharded()) ep_group_->all_reduce(experts, comm::ReduceOp::kSum)->wait();
  return dense + experts.item<double>();
}

void ExpertParallelEngine::step(double lr, double grad_multiplier) {
  for (DataParallelEngine* engine : engines()) engine->step(lr, grad_multiplier);
}

void ExpertParallelEngine::gather_parameters() {
  for (DataParallelEngine* engine : engines()) engine->gather_parameters();
}

void ExpertParallelEngine::release_parameters() {
  for (DataParallelEngine* engine : engines()) engine->release_parameters();
}

void ExpertParallelEngine::describe_layout(MemoryPlanInputs& inputs) const {
  if (dense_) dense_->describe_layout(inputs);
  if (!experts_) return;
  MemoryPlanInputs experts;
  experts_->describe_layout(experts);
  ExpertGroupLayout& group = inputs.expert_group;
  group.gradient_bucket_elements.insert(group.gradient_bucket_elements.end(),
                                        experts.gradient_bucket_elements.begin(),
                                        experts.gradient_bucket_elements.end());
  group.zero_unit_padded_elements.insert(group.zero_unit_padded_elements.end(),
                                         experts.zero_unit_padded_elements.begin(),
                                         experts.zero_unit_padded_elements.end());
  if (!experts_->gradients_sharded()) ++group.norm_all_reduces;
}

std::vector<ParameterStateSlice> ExpertParallelEngine::state_slices() {
  std::vector<ParameterStateSlice> slices;
  for (DataParallelEngine* engine : engines())
    for (ParameterStateSlice& slice : engine->state_slices()) slices.push_back(std::move(slice));
  return slices;
}

void ExpertParallelEngine::set_optimizer_steps(int64_t steps) {
  for (DataParallelEngine* engine : engines()) engine->set_optimizer_steps(steps);
}

void ExpertParallelEngine::state_restored() {
  for (DataParallelEngine* engine : engines()) engine->state_restored();
}

void ExpertParallelEngine::before_forward(int unit) {
  const UnitPlacement& placement = units_.at(unit);
  if (placement.dense >= 0 && dense_->unit_hooks())
    dense_->unit_hooks()->before_forward(placement.dense);
  if (placement.experts >= 0 && experts_->unit_hooks())
    experts_->unit_hooks()->before_forward(placement.experts);
}

at::Tensor ExpertParallelEngine::after_forward(int unit, const at::Tensor& output) {
  const UnitPlacement& placement = units_.at(unit);
  at::Tensor result = output;
  if (placement.dense >= 0 && dense_->unit_hooks())
    result = dense_->unit_hooks()->after_forward(placement.dense, result);
  if (placement.experts >= 0 && experts_->unit_hooks())
    result = experts_->unit_hooks()->after_forward(placement.experts, result);
  return result;
}

}  // namespace dst

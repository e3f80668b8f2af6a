// ZeRO stage 0: every rank keeps full parameters, gradients and AdamW state; gradients are
// all-reduced in buckets by GradientReducer. Parameters narrower than fp32 get fp32 master copies
// in the optimizer.
#pragma once

#include <memory>

#include "deepseek_train/optim/adamw.h"
#include "deepseek_train/sharding/data_parallel_engine.h"
#include "deepseek_train/sharding/grad_reducer.h"

namespace dst {

class ReplicatedEngine final : public DataParallelEngine {
 public:
  explicit ReplicatedEngine(const DataParallelEngineSpec& spec);

  void zero_grad() override { reducer_->zero_grad(); }
  void set_sync(bool last_micro_batch) override { reducer_->set_sync(last_micro_batch); }
  void finish_backward() override { reducer_->finish(); }
  double local_grad_squared_norm() override;
  bool gradients_sharded() const override { return false; }
  void step(double lr, double grad_multiplier) override { optimizer_->step(lr, grad_multiplier); }
  void describe_layout(MemoryPlanInputs& inputs) const override;
  std::vector<ParameterStateSlice> state_slices() override;
  int64_t optimizer_steps() const override { return optimizer_->step_count(); }
  void set_optimizer_steps(int64_t steps) override { optimizer_->set_step_count(steps); }
  void state_restored() override;

 private:
  std::vector<at::Tensor> parameters_;
  std::vector<bool> counted_;   // in the gradient norm
  bool first_of_group_ = true;  // saves the state in checkpoints
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<AdamW> optimizer_;
};

}  // namespace dst

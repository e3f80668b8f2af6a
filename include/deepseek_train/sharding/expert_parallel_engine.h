// The data-parallel engine of one pipeline chunk under expert parallelism. A routed expert lives
// on one rank of its ep group and is replicated only over the expert-data-parallel group (the
// ranks with the same ep index, mesh/process_groups.h), so its gradients are reduced — and under
// ZeRO its state sharded — over that group, while every other parameter is data-parallel over the
// usual dp group. Two engines of the recipe's stage, one per group, driven as one: a model unit
// (a decoder layer) may have parameters in both, and the unit hooks reach both engines' units.
#pragma once

#include <memory>
#include <vector>

#include "deepseek_train/sharding/data_parallel_engine.h"

namespace dst {

class ExpertParallelEngine final : public DataParallelEngine, public UnitHooks {
 public:
  // Where each of the chunk's units (the model's order) has its parameters: its index among the
  // dense engine's units and among the experts engine's (-1: none there).
  struct UnitPlacement {
    int dense = -1;
    int experts = -1;
  };
  // Either engine may be null (a chunk whose trainable parameters are all of one kind).
  // `ep_group` sums the experts' gradient-norm share when gradients are not sharded.
  ExpertParallelEngine(std::unique_ptr<DataParallelEngine> dense,
                       std::unique_ptr<DataParallelEngine> experts,
                       std::vector<UnitPlacement> units, comm::CommunicatorPtr ep_group);

  void zero_grad() override;
  void set_sync(bool last_micro_batch) override;
  void finish_backward() override;
  // Sharded gradients: both engines' shares (each expert element counted on one rank of the dp
  // group, which holds every ep index). Replicated: the dense norm plus the experts' summed over
  // the ep group (collective over it).
  double local_grad_squared_norm() override;
  bool gradients_sharded() const override { return any().gradients_sharded(); }
  void step(double lr, double grad_multiplier) override;
  void gather_parameters() override;
  void release_parameters() override;
  UnitHooks* unit_hooks() override { return hooked_ ? this : nullptr; }
  // The dense engine's buckets or units, the experts' as the expert group's.
  void describe_layout(MemoryPlanInputs& inputs) const override;
  std::vector<ParameterStateSlice> state_slices() override;
  int64_t optimizer_steps() const override { return any().optimizer_steps(); }
  void set_optimizer_steps(int64_t steps) override;
  void state_restored() override;

  void before_forward(int unit) override;
  at::Tensor after_forward(int unit, const at::Tensor& output) override;

 private:
  const DataParallelEngine& any() const { return dense_ ? *dense_ : *experts_; }
  std::vector<DataParallelEngine*> engines() const;
  std::unique_ptr<DataParallelEngine> dense_, experts_;
  std::vector<UnitPlacement> units_;
  comm::CommunicatorPtr ep_group_;
  bool hooked_ = false;
};

}  // namespace dst

// ZeRO stages 1-3 on the data-parallel axis. Parameters may be fp32 or bf16 (then the engine
// keeps fp32 master shards, reduces gradients in the reduce dtype into fp32 gradient shards, and
// rounds updated masters into the parameter shards). Each sharding unit's parameters live in one
// flat buffer padded to a multiple of the dp size; rank r owns the contiguous shard
// [r * S, (r + 1) * S) and keeps the AdamW moments (and, at stage 3, the parameters) only for it.
//   stage 1: gradients accumulate in full; after the step's last micro-batch each unit's gradient
//            is reduce-scattered into the owner's shard; the owner updates its shard; updated
//            parameters are all-gathered.
//   stage 2: as 1, but every micro-batch's gradient is reduce-scattered as soon as the unit's
//            backward is done, and the full gradient buffer exists only during that backward.
//   stage 3: as 2, and the full parameters exist only while a unit computes: all-gathered before
//            its forward (the next unit's gather is issued meanwhile: prefetch), released after,
//            gathered again before its backward, released once its gradient is reduce-scattered.
// Per rank and step (P = padded unit elements, S = P / N, k micro-batches), in elements:
//   stage 1: reduce-scatter (P - S) + all-gather (P - S)
//   stage 2: k (P - S) + (P - S);   stage 3: 3 k (P - S)
#pragma once

#include <memory>
#include <vector>

#include "deepseek_train/sharding/data_parallel_engine.h"

namespace dst {

namespace detail {
class BufferPool;
}

class ZeroEngine final : public DataParallelEngine, public UnitHooks {
 public:
  // Moves each unit's parameters (fp32) into flat buffers of spec.param_type (their values are
  // kept; fp32 masters are kept when narrower). `first_unit_reused_by_last` (tied embeddings):
  // ZeRO-3 keeps unit 0 gathered from its forward through the last unit's forward, and from the
  // last unit's backward until unit 0's gradient is reduced; unit 0's gradient buffer exists
  // from the last unit's backward on. Unit 0 may also be used by the last unit only (the
  // embedding's copy on the last pipeline stage), never running a forward of its own.
  // Collective over the dp group.
  explicit ZeroEngine(const DataParallelEngineSpec& spec);
  ~ZeroEngine() override;
  ZeroEngine(const ZeroEngine&) = delete;
  ZeroEngine& operator=(const ZeroEngine&) = delete;

  int stage() const { return stage_; }
  // Zeroes the gradient shards (and, stage 1, the full gradients).
  void zero_grad() override;
  void set_sync(bool last_micro_batch) override;
  // Waits for the gradient reductions of the micro-batch just back-propagated (at stage 1 only
  // the last micro-batch reduces).
  void finish_backward() override;
  // Global L2 norm of the gradient (all shards); clips the shards to max_norm when > 0.
  double local_grad_squared_norm() override;
  bool gradients_sharded() const override { return true; }
  // AdamW on this rank's shards, then (stages 1-2) all-gather of the updated parameters.
  void step(double lr, double grad_multiplier) override;
  // Stage 3: make every unit's full parameters present (collective) / release them again.
  void gather_parameters() override;
  void release_parameters() override;
  UnitHooks* unit_hooks() override { return stage_ >= 2 ? this : nullptr; }
  void describe_layout(MemoryPlanInputs& inputs) const override;

  std::vector<ParameterStateSlice> state_slices() override;
  int64_t optimizer_steps() const override { return step_count_; }
  void set_optimizer_steps(int64_t steps) override { step_count_ = steps; }
  void state_restored() override;

  // Padded element count of each unit (a multiple of the dp size).
  std::vector<int64_t> padded_unit_elements() const;

  void before_forward(int unit) override;
  at::Tensor after_forward(int unit, const at::Tensor& output) override;

 private:
  struct Unit;
  void start_gather(int unit);
  void ensure_gathered(int unit);
  void release(int unit);
  void on_backward_begin(int unit);
  void prepare_gradient_buffer(int unit);
  // Rounds the master shards into the parameter shards; stages 1-2 all-gather the full
  // parameters.
  void publish_parameters();
  void copy_gradients_to_host();
  void on_gradient_ready(int unit);
  void launch_ready_reductions();
  void complete_reduction(int unit);
  // HSDP: waits for the replicas' sums of the reduced shards and adds them to the gradient shards
  // (after backward).
  void add_replica_sums();
  void poll_reductions();

  std::vector<std::unique_ptr<Unit>> units_;
  comm::CommunicatorPtr group_;
  comm::CommunicatorPtr replicate_group_;  // HSDP replicas; null without
  int stage_;
  AdamWOptions options_;
  bool tied_ = false;
  at::ScalarType reduce_type_ = at::kFloat;
  bool sync_ = true;
  int next_to_reduce_ = 0;  // units reduce in reverse order: counts down from the last
  int64_t step_count_ = 0;
  struct HookState;
  std::shared_ptr<HookState> hook_state_;
  // Buffers of the flat tensors materialised per unit and step (stage 3 parameters, stage 2-3
  // gradients), reused instead of allocated per gather (null at stage 1).
  std::unique_ptr<detail::BufferPool> pool_;
};

}  // namespace dst

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

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/optim/optim_options.h"
#include "deepseek_train/sharding/unit_hooks.h"

namespace dst {

class ZeroEngine final : public UnitHooks {
 public:
  using NamedTensorList = std::vector<std::pair<std::string, at::Tensor>>;
  // `units`: parameters per sharding unit in forward order (the model's sharding_units()).
  // `decays(name, tensor)`: whether weight decay applies. The parameters are moved into flat
  // buffers (their values are kept). Collective over `dp_group`.
  // `first_unit_reused_by_last`: the last unit also computes with unit 0's parameters (tied
  // embeddings); ZeRO-3 then keeps unit 0 gathered from its forward through the last unit's
  // forward, and from the last unit's backward until unit 0's gradient is reduced.
  ZeroEngine(std::vector<NamedTensorList> units,
             const std::function<bool(const std::string&, const at::Tensor&)>& decays,
             comm::CommunicatorPtr dp_group, int stage, const AdamWOptions& options,
             bool first_unit_reused_by_last = false, at::ScalarType param_type = at::kFloat,
             at::ScalarType reduce_type = at::kFloat);
  ~ZeroEngine() override;
  ZeroEngine(const ZeroEngine&) = delete;
  ZeroEngine& operator=(const ZeroEngine&) = delete;

  int stage() const { return stage_; }
  // Zeroes the gradient shards (and, stage 1, the full gradients). Before a step's first backward.
  void zero_grad();
  // Whether the coming backward is the step's last micro-batch.
  void set_sync(bool last_micro_batch);
  // Waits for the gradient reductions of the micro-batch just back-propagated (call after every
  // micro-batch's backward; at stage 1 only the last one reduces).
  void finish_backward();
  // Global L2 norm of the gradient (all shards); clips the shards to max_norm when > 0.
  double clip_grad_norm(double max_norm);
  // AdamW on this rank's shards, then (stages 1-2) all-gather of the updated parameters.
  void step(double lr);

  // Stage 3: make every unit's full parameters present (collective) / release them again.
  // No-ops at stages 1-2, where full parameters are always present.
  void gather_parameters();
  void release_parameters();

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
  void on_gradient_ready(int unit);
  void launch_ready_reductions();
  void complete_reduction(int unit);
  void poll_reductions();

  std::vector<std::unique_ptr<Unit>> units_;
  comm::CommunicatorPtr group_;
  int stage_;
  AdamWOptions options_;
  bool tied_ = false;
  at::ScalarType reduce_type_ = at::kFloat;
  bool sync_ = true;
  int next_to_reduce_ = 0;  // units reduce in reverse order: counts down from the last
  int64_t step_count_ = 0;
  struct HookState;
  std::shared_ptr<HookState> hook_state_;
};

}  // namespace dst

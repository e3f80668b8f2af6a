// The data-parallel engine a trainer drives, whatever the ZeRO stage: it owns gradient
// synchronisation across the dp group and the optimizer state, and takes the model's fp32
// parameters (casting them to the parameter dtype and keeping fp32 masters when narrower).
//   stage 0: ReplicatedEngine (replicated_engine.h) — bucketed all-reduce, full AdamW on each rank
//   stages 1-3: ZeroEngine (zero.h) — sharded optimizer state / gradients / parameters
// Per step: zero_grad(); for each micro-batch { set_sync(last); forward; backward;
// finish_backward(); } local_grad_squared_norm() (summed by the caller over the groups that
// split the gradient); step(lr, multiplier).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/optim/optim_options.h"
#include "deepseek_train/sharding/data_parallel_options.h"
#include "deepseek_train/sharding/memory_plan.h"
#include "deepseek_train/sharding/unit_hooks.h"

namespace dst {

// This rank's piece of one parameter's training state: elements [begin, end) of the flattened
// parameter as the model holds it (its tensor-parallel slice). The tensors are views of the
// engine's storage, each [end - begin]: reading them snapshots the state, writing them (then
// calling state_restored()) restores it.
struct ParameterStateSlice {
  std::string name;
  int64_t begin = 0;
  int64_t end = 0;
  at::Tensor parameter;  // in the parameter dtype (the same tensor as master when that is fp32)
  at::Tensor master;     // fp32 values the optimizer updates
  at::Tensor exp_avg;
  at::Tensor exp_avg_sq;
  at::Tensor gradient;  // as stored for step(): valid between finish_backward() and step()
  // Whether a checkpoint takes this rank's copy: the state is replicated over the engine's group
  // (stage 0) or over HSDP replicas, and only the first holder saves it.
  bool saved_here = true;
};

class DataParallelEngine {
 public:
  virtual ~DataParallelEngine() = default;
  // Before a step's first micro-batch.
  virtual void zero_grad() = 0;
  // Whether the coming backward is the step's last micro-batch.
  virtual void set_sync(bool last_micro_batch) = 0;
  // After every micro-batch's backward: waits for the reductions that micro-batch started.
  virtual void finish_backward() = 0;
  // This rank's share of the squared L2 norm of the stored gradient: with gradients_sharded()
  // each element of the dp group's gradient is counted on exactly one dp rank (sum the shares
  // over dp), otherwise every dp rank holds and counts all of it. Parameters for which
  // spec.counts_in_norm is false are left out. Non-finite when any counted element is.
  virtual double local_grad_squared_norm() = 0;
  virtual bool gradients_sharded() const = 0;
  // AdamW from the stored gradients times grad_multiplier (unscaling and clipping).
  virtual void step(double lr, double grad_multiplier) = 0;
  // Full parameters present (collective) / released again; no-ops unless parameters are sharded.
  virtual void gather_parameters() {}
  virtual void release_parameters() {}
  // Hooks the model must call around its units (nullptr: none needed).
  virtual UnitHooks* unit_hooks() { return nullptr; }
  // Fills what the memory plan needs to know of this engine's layout (buckets or units).
  virtual void describe_layout(MemoryPlanInputs& inputs) const = 0;

  // The state this rank keeps, per parameter in unit order: a shard under ZeRO, the whole
  // parameter on every dp rank otherwise (ParameterStateSlice::saved_here on the first).
  virtual std::vector<ParameterStateSlice> state_slices() = 0;
  // AdamW steps taken (bias correction); restored with the state.
  virtual int64_t optimizer_steps() const = 0;
  virtual void set_optimizer_steps(int64_t steps) = 0;
  // After master slices were written: rounds them into the parameters and makes every dp rank's
  // full parameters current again (collective over dp).
  virtual void state_restored() = 0;
};

// Everything an engine is built from.
struct DataParallelEngineSpec {
  // Parameters (fp32) per sharding unit in forward order, by name.
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> units;
  // Gives a unit's parameters their memory and initial values (deferred parameters,
  // core/deferred_tensor.h), called once per unit in order while the engine is built, so a
  // sharding engine holds at most its shards plus one unit. Null: they already hold them.
  std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)> materialize;
  std::function<bool(const std::string&, const at::Tensor&)> decays;
  comm::CommunicatorPtr dp_group;
  // HSDP (ZeRO stages 1-3): the replicas of this rank's shards; each reduced gradient shard is
  // also summed across it. Null or of size 1: no replicas.
  comm::CommunicatorPtr dp_replicate_group;
  DataParallelOptions data_parallel;
  AdamWOptions optim;
  at::ScalarType param_type = at::kFloat;
  at::ScalarType reduce_type = at::kFloat;
  bool first_unit_reused_by_last = false;  // tied embeddings
  // Whether a parameter's gradient counts in this rank's norm share (null: all do). Parameters
  // replicated across tensor-parallel ranks are counted on one of them only.
  std::function<bool(const std::string&)> counts_in_norm;
};

// ReplicatedEngine for stage 0, ZeroEngine for stages 1-3.
std::unique_ptr<DataParallelEngine> make_data_parallel_engine(const DataParallelEngineSpec& spec);

}  // namespace dst

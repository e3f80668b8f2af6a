// The one place a model is laid out on the mesh (torchtitan's parallelize step), always in this
// order:
//   1. shard_spec_for_rank — tensor parallelism (the tp group the family's tensor-parallel layers
//      split over), this pp rank's pipeline chunks, activation checkpointing: what the model
//      family builds (ModelFamilyRegistry::build);
//   2. the caller applies adapters, which decide what trains, and fills the weights that do not
//      (train/initial_weights.h);
//   3. parallelize_data — a data-parallel engine (DDP or ZeRO-1/2/3, HSDP) per local chunk over
//      its trainable parameters, the unit hooks through which ZeRO-3 gathers, the group that
//      keeps a tied embedding equal across the pipeline's ends, and the pipeline executor.
// Expert parallelism will join between 1 and 3 (issue: DeepSeek-V2/V3).
#pragma once

#include <ATen/core/ScalarType.h>

#include <functional>
#include <memory>
#include <vector>

#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/model/causal_lm.h"
#include "deepseek_train/sharding/data_parallel_engine.h"
#include "deepseek_train/train/train_config.h"

namespace dst {

class ChunkUnitHooks;
class PipelineExecutor;

// What the rank builds: its tp group, its pipeline chunks (all layers without pp), activation
// checkpointing and kernel choice from the recipe.
ModelShardSpec shard_spec_for_rank(const TrainConfig& config, const ProcessGroups& groups);

// What the training loop runs besides the model.
struct ParallelizedModel {
  ParallelizedModel();
  ParallelizedModel(ParallelizedModel&&) noexcept;
  ParallelizedModel& operator=(ParallelizedModel&&) noexcept;
  ~ParallelizedModel();

  // Gradient reduction and optimizer of each local chunk, in chunk order.
  std::vector<std::unique_ptr<DataParallelEngine>> engines;
  // Routes the model's unit hooks to the engines (the model points at it: keep it alive).
  std::unique_ptr<ChunkUnitHooks> unit_hooks;
  std::unique_ptr<PipelineExecutor> pipeline;  // pp > 1 only
  // Tied embeddings across pipeline stages: the first and the last stage (the only members)
  // hold the embedding and its copy in engines[embedding_engine].
  comm::CommunicatorPtr embedding_group;
  int embedding_engine = -1;
};

// Step 3 above. `materialize` gives each unit's trainable parameters their memory and values as
// its engine takes them (DataParallelEngineSpec::materialize; null: they hold them already).
// ConfigError when a pipeline stage holds no trainable parameter. Collective over the pp group
// (whether a tied embedding trains anywhere).
ParallelizedModel parallelize_data(const std::shared_ptr<CausalLM>& model,
                                   const TrainConfig& config, const ProcessGroups& groups,
                                   at::ScalarType activation_dtype,
                                   std::function<void(NamedParameters&)> materialize = nullptr);

}  // namespace dst

#include "deepseek_train/train/parallelize.h"

#include <ATen/ATen.h>

#include <utility>

#include "deepseek_train/core/error.h"
#include "deepseek_train/pipeline/partition.h"
#include "deepseek_train/pipeline/schedule.h"
#include "deepseek_train/precision/precision_policy.h"
#include "deepseek_train/sharding/expert_parallel_engine.h"
#include "deepseek_train/train/trainer.h"
#include "pipeline_executor.h"

namespace dst {

// Routes the model's unit hooks (numbered over all local chunks) to the engine of each chunk.
class ChunkUnitHooks final : public UnitHooks {
 public:
  // The model's next unit is the engine's unit `local` (hooks null or local < 0: no hooks; a
  // unit whose parameters are all frozen belongs to no engine).
  void add_unit(UnitHooks* hooks, int local) {
    targets_.emplace_back(local >= 0 ? hooks : nullptr, local);
  }
  void before_forward(int unit) override {
    auto& [hooks, local] = targets_.at(unit);
    if (hooks) hooks->before_forward(local);
  }
  at::Tensor after_forward(int unit, const at::Tensor& output) override {
    auto& [hooks, local] = targets_.at(unit);
    return hooks ? hooks->after_forward(local, output) : output;
  }
  bool any() const {
    for (const auto& target : targets_)
      if (target.first) return true;
    return false;
  }

 private:
  std::vector<std::pair<UnitHooks*, int>> targets_;
};

ParallelizedModel::ParallelizedModel() = default;
ParallelizedModel::ParallelizedModel(ParallelizedModel&&) noexcept = default;
ParallelizedModel& ParallelizedModel::operator=(ParallelizedModel&&) noexcept = default;
ParallelizedModel::~ParallelizedModel() = default;

ModelShardSpec shard_spec_for_rank(const TrainConfig& config, const ProcessGroups& groups) {
  const ParallelDims& dims = groups.dims();
  const ModelParallelOptions& mp = config.model_parallel;
  ModelShardSpec shard;
  shard.tp_group = groups.tp_ptr();
  if (dims.ep > 1) shard.ep_group = groups.ep_ptr();  // TrainConfig::validate: the model has MoE
  shard.checkpoint_every = mp.activation_checkpointing;
  shard.fused_kernels = config.train.kernels == "fused";
  if (dims.pp > 1) {
    shard.chunks = chunks_of_rank(partition_layers(config.model.num_hidden_layers, dims.pp,
                                                   mp.virtual_stages, mp.layers_per_stage),
                                  dims.pp, groups.coord().pp);
  }
  return shard;
}

namespace {

// The engine of one chunk: its units' trainable parameters, sharded over dp_shard (ZeRO, with
// the replicas of HSDP) or all-reduced over every data-parallel rank (stage 0).
DataParallelEngineSpec engine_spec(const std::shared_ptr<CausalLM>& model,
                                   const TrainConfig& config, const ProcessGroups& groups,
                                   bool embedding_copy) {
  const PrecisionPolicy precision = PrecisionPolicy::from_options(config.precision);
  DataParallelEngineSpec spec;
  spec.decays = [](const std::string& name, const at::Tensor& p) {
    return !is_no_decay_parameter(name, p);
  };
  // Parameters replicated across tp ranks (norm weights) count once in the gradient norm.
  // The tied embedding's copy on the last stage counts on the first stage only.
  const bool first_tp_rank = groups.coord().tp == 0;
  spec.counts_in_norm = [model, first_tp_rank, embedding_copy](const std::string& name) {
    if (embedding_copy && model->is_embedding(name)) return false;
    return first_tp_rank || model->tp_split(name) != TpSplit::kReplicated;
  };
  const bool sharded = config.data_parallel.zero_stage > 0;
  spec.dp_group = sharded ? groups.dp_ptr() : groups.data_parallel_ptr();
  if (sharded) spec.dp_replicate_group = groups.dp_replicate_ptr();
  spec.data_parallel = config.data_parallel;
  spec.optim = config.optim;
  spec.param_type = scalar_type_of(precision.param);
  spec.reduce_type = scalar_type_of(precision.reduce);
  return spec;
}

// The group of the first and the last pipeline stage when a tied embedding trains on either
// (null elsewhere and when nothing needs summing). Collective over pp.
comm::CommunicatorPtr tied_embedding_group(const TrainConfig& config, const ProcessGroups& groups,
                                           int embedding_engine) {
  const ParallelDims& dims = groups.dims();
  if (!config.model.tie_word_embeddings || dims.pp == 1) return nullptr;
  at::Tensor trains = at::full({1}, embedding_engine >= 0 ? 1.0 : 0.0, at::kDouble);
  groups.pp().all_reduce(trains, comm::ReduceOp::kSum)->wait();
  if (trains.item<double>() == 0) return nullptr;
  const int stage = groups.coord().pp;
  const bool member = stage == 0 || stage == dims.pp - 1;
  comm::CommunicatorPtr group =
      dims.pp == 2 ? groups.pp_ptr() : groups.pp().split(member ? 0 : 1, stage, "embedding");
  return member ? group : nullptr;
}

}  // namespace

ParallelizedModel parallelize_data(const std::shared_ptr<CausalLM>& model,
                                   const TrainConfig& config, const ProcessGroups& groups,
                                   at::ScalarType activation_dtype,
                                   std::function<void(NamedParameters&)> materialize) {
  ParallelizedModel out;
  const ParallelDims& dims = groups.dims();
  const bool tied = config.model.tie_word_embeddings;
  auto all_units = model->sharding_units();
  out.unit_hooks = std::make_unique<ChunkUnitHooks>();
  size_t next_unit = 0;
  for (const LayerChunk& chunk : model->chunks()) {
    const size_t units = static_cast<size_t>(model->units_of_chunk(chunk));
    const bool embedding_copy = model->holds_embedding_copy(chunk);
    // Only trainable parameters go to the engine; units left empty (all frozen) get no hooks.
    // Under expert parallelism the routed experts' go to an engine of their own.
    DataParallelEngineSpec spec = engine_spec(model, config, groups, embedding_copy);
    spec.materialize = materialize;
    DataParallelEngineSpec expert_spec = spec;
    const bool sharded = config.data_parallel.zero_stage > 0;
    expert_spec.dp_group = sharded ? groups.edp_ptr() : groups.expert_data_parallel_ptr();
    if (sharded) expert_spec.dp_replicate_group = groups.expert_dp_replicate_ptr();
    std::vector<ExpertParallelEngine::UnitPlacement> placements;
    for (size_t u = next_unit; u < next_unit + units; ++u) {
      NamedParameters trainable, experts;
      for (auto& item : all_units[u])
        if (item.second.requires_grad())
          (dims.ep > 1 && model->is_routed_expert(item.first) ? experts : trainable)
              .push_back(item);
      ExpertParallelEngine::UnitPlacement placement;
      if (!trainable.empty()) {
        placement.dense = static_cast<int>(spec.units.size());
        spec.units.push_back(std::move(trainable));
      }
      if (!experts.empty()) {
        placement.experts = static_cast<int>(expert_spec.units.size());
        expert_spec.units.push_back(std::move(experts));
      }
      placements.push_back(placement);
    }
    next_unit += units;
    DST_CHECK(!spec.units.empty() || !expert_spec.units.empty(), ConfigError,
              "pipeline stage " << groups.coord().pp << " (layers " << chunk.begin << "-"
                                << chunk.end - 1
                                << ") holds no trainable parameter: choose adapters that reach "
                                   "every stage, or fewer pipeline stages");
    // Unit 0 of a chunk with the embedding (or its copy) is the embedding's.
    const bool embedding_trains =
        (chunk.has_embedding || embedding_copy) && placements.front().dense == 0;
    if (tied && dims.pp > 1 && embedding_trains)
      out.embedding_engine = static_cast<int>(out.engines.size());
    // With tied embeddings the head uses unit 0: the embedding, or its copy on the last stage.
    spec.first_unit_reused_by_last = tied && chunk.has_head && embedding_trains;
    // The engine takes the fp32 initialisation (kept as master weights when the parameter dtype
    // is narrower) and casts the parameters itself.
    if (expert_spec.units.empty()) {
      out.engines.push_back(make_data_parallel_engine(spec));
      for (const auto& placement : placements)
        out.unit_hooks->add_unit(out.engines.back()->unit_hooks(), placement.dense);
      continue;
    }
    // Every unit is the combined engine's (it passes each on to the engines holding its part).
    std::vector<int> local_units;
    for (size_t u = 0; u < placements.size(); ++u)
      local_units.push_back(
          placements[u].dense >= 0 || placements[u].experts >= 0 ? static_cast<int>(u) : -1);
    out.engines.push_back(std::make_unique<ExpertParallelEngine>(
        spec.units.empty() ? nullptr : make_data_parallel_engine(spec),
        make_data_parallel_engine(expert_spec), std::move(placements), groups.ep_ptr()));
    for (int local : local_units) out.unit_hooks->add_unit(out.engines.back()->unit_hooks(), local);
  }
  model->set_unit_hooks(out.unit_hooks->any() ? out.unit_hooks.get() : nullptr);
  out.embedding_group = tied_embedding_group(config, groups, out.embedding_engine);
  if (dims.pp > 1) {
    std::vector<DataParallelEngine*> engines;
    for (auto& engine : out.engines) engines.push_back(engine.get());
    const ModelParallelOptions& mp = config.model_parallel;
    const ScheduleSpec schedule{parse_schedule_kind(mp.schedule), dims.pp,
                                static_cast<int>(config.train.grad_accum), mp.virtual_stages};
    groups.pp().prepare_point_to_point();  // collective over pp (NCCL: one per direction)
    out.pipeline = std::make_unique<PipelineExecutor>(model, std::move(engines), groups.pp_ptr(),
                                                      schedule, activation_dtype);
  }
  return out;
}

}  // namespace dst

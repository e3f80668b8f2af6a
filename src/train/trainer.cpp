#include "deepseek_train/train/trainer.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "deepseek_train/checkpoint/encrypted_folder.h"
#include "deepseek_train/checkpoint/hf_interop.h"
#include "deepseek_train/checkpoint/weights_file.h"
#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/cpu_allocator.h"
#include "deepseek_train/core/deferred_tensor.h"
#include "deepseek_train/core/device.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/distributed_sampler.h"
#include "deepseek_train/kernels/fused_ops.h"
#include "deepseek_train/optim/grad_clip.h"
#include "deepseek_train/optim/lr_schedule.h"
#include "deepseek_train/pipeline/partition.h"
#include "deepseek_train/pipeline/schedule.h"
#include "deepseek_train/sharding/data_parallel_engine.h"
#include "deepseek_train/train/initial_weights.h"
#include "deepseek_train/train/metrics.h"
#include "deepseek_train/train/peft_import.h"
#include "deepseek_train/train/run_outputs.h"
#include "deepseek_train/train/run_policy.h"
#include "deepseek_train/train/step_metrics.h"
#include "deepseek_train/train/training_data.h"
#include "dp_sgd.h"
#include "pipeline_executor.h"

namespace dst {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// "q_proj, k_proj, ..." : the projections of the model adapters can attach to, by last name.
std::string projection_names(CausalLM& model) {
  std::vector<std::string> names;
  for (const ProjectionSite& site : model.projection_sites()) {
    const std::string name = site.name.substr(site.name.rfind('.') + 1);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  std::string text;
  for (const std::string& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

// Sums `values` over the group in fp64 (in place).
std::vector<double> all_reduce_sum(comm::Communicator& group, std::vector<double> values) {
  if (group.size() == 1) return values;
  torch::Tensor buffer = torch::tensor(values, torch::kFloat64);
  group.all_reduce(buffer, comm::ReduceOp::kSum)->wait();
  auto accessor = buffer.accessor<double, 1>();
  for (size_t i = 0; i < values.size(); ++i) values[i] = accessor[static_cast<int64_t>(i)];
  return values;
}

// Pipeline rank 0 receives every other stage's (name, tensor) list, in stage order, and returns
// the concatenation; the other stages send theirs and get an empty list. Tensors travel as fp32.
std::vector<std::pair<std::string, torch::Tensor>> collect_pipeline_stages(
    comm::Communicator& pp, std::vector<std::pair<std::string, torch::Tensor>> own) {
  auto send_ints = [&](std::vector<int64_t> values, int to) {
    torch::Tensor t = torch::tensor(values, torch::kInt64);
    pp.send(t, to, 0)->wait();
  };
  auto recv_ints = [&](int64_t count, int from) {
    torch::Tensor t = torch::empty({count}, torch::kInt64);
    pp.recv(t, from, 0)->wait();
    return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + count);
  };
  if (pp.rank() != 0) {
    send_ints({static_cast<int64_t>(own.size())}, 0);
    for (const auto& [name, tensor] : own) {
      std::vector<int64_t> header{static_cast<int64_t>(name.size()), tensor.dim(),
                                  static_cast<int64_t>(tensor.scalar_type())};
      for (int64_t d : tensor.sizes()) header.push_back(d);
      send_ints({static_cast<int64_t>(header.size())}, 0);
      send_ints(header, 0);
      std::vector<int64_t> chars(name.begin(), name.end());
      send_ints(chars, 0);
      torch::Tensor data = tensor.to(torch::kFloat32).contiguous();
      pp.send(data, 0, 0)->wait();
    }
    return {};
  }
  for (int stage = 1; stage < pp.size(); ++stage) {
    const int64_t count = recv_ints(1, stage)[0];
    for (int64_t i = 0; i < count; ++i) {
      const std::vector<int64_t> header = recv_ints(recv_ints(1, stage)[0], stage);
      const std::vector<int64_t> chars = recv_ints(header[0], stage);
      std::vector<int64_t> shape(header.begin() + 3, header.end());
      torch::Tensor data = torch::empty(shape, torch::kFloat32);
      pp.recv(data, stage, 0)->wait();
      std::string name(chars.begin(), chars.end());
      // A tied embedding's copy on the last stage is the first stage's embedding: keep one.
      const bool duplicate =
          std::any_of(own.begin(), own.end(), [&](const auto& item) { return item.first == name; });
      if (!duplicate)
        own.emplace_back(std::move(name), data.to(static_cast<at::ScalarType>(header[2])));
    }
  }
  return own;
}

// Moves the parameters that have their values to `device` (deferred ones stay until they are
// filled); a no-op for those already there.
void place_on_device(NamedParameters& parameters, const c10::Device& device) {
  torch::NoGradGuard no_grad;
  for (auto& [name, parameter] : parameters)
    if (!is_deferred(parameter) && parameter.device() != device)
      parameter.set_data(parameter.to(device));
}

void place_model_on_device(torch::nn::Module& model, const c10::Device& device) {
  NamedParameters parameters;
  for (auto& item : model.named_parameters(/*recurse=*/true))
    parameters.emplace_back(item.key(), item.value());
  place_on_device(parameters, device);
}

}  // namespace

at::ScalarType scalar_type_of(Precision precision) {
  switch (precision) {
    case Precision::kBFloat16:
      return torch::kBFloat16;
    case Precision::kFloat16:
      return torch::kFloat16;
    default:
      return torch::kFloat32;
  }
}

int configure_intra_op_threads(const TrainOptions& options, const LaunchEnv& env) {
  const int threads =
      default_intra_op_threads(options.threads, affinity_cores(), hardware_cores(), env.local_size);
  at::set_num_threads(threads);
  return threads;
}

Trainer::Trainer(const TrainConfig& config, ProcessGroups groups, Logger logger,
                 const AdapterRegistry* adapters, const ModelFamilyRegistry* families)
    : config_(config),
      groups_(std::move(groups)),
      logger_(std::move(logger)),
      scaler_(config.precision.loss_scaler,
              PrecisionPolicy::from_options(config.precision).needs_loss_scaler()),
      load_balancer_(config.moe.bias_update_rate) {
  config_.validate();
  run_unsharded_zero_as_stage_0();
  process_baseline_bytes_ = resident_set_bytes();
  use_cpu_allocator(config_.train.cpu_allocator,
                    static_cast<size_t>(config_.train.cpu_allocator_cache_mb) << 20);
  encryption_key_ = load_encryption_key();
  device_ = resolve_device(config_.train.device, detect_launch_env(process_env()),
                           probe_devices(process_env()));
  make_current_device(device_);
  const std::string backend = groups_.world().backend();
  DST_CHECK(device_.is_cpu() || backend != "mpi", ConfigError,
            "train.device resolved to " << device_ << ", but the world's backend '" << backend
                                        << "' moves CPU tensors only: open the world for this "
                                           "device (comm::open_process_world) or set "
                                           "train.device: cpu");
  checkpoint_writer_ = std::make_unique<CheckpointWriter>(groups_.world_ptr(), encryption_key_);
  // 1. The family builds this rank's part of the model: tp shards, pipeline chunks, activation
  // checkpointing (train/parallelize.h has the order).
  const ModelFamilyRegistry builtin_families;
  model_ = (families ? *families : builtin_families)
               .build(config_.model, shard_spec_for_rank(config_, groups_));
  // 2. Adapters decide what trains. Weights are filled as they are needed
  // (train/initial_weights.h): what the family allocated now, the frozen base after the adapters,
  // what trains unit by unit inside the engines (step 3).
  InitialWeights weights(*model_, config_.train.seed, config_.train.init_from);
  weights.fill_allocated();
  place_model_on_device(*model_, device_);
  const PrecisionPolicy precision = PrecisionPolicy::from_options(config_.precision);
  if (!config_.train.init_adapter.empty())
    config_.adapters = adapters_with_peft_folder(config_.adapters, config_.train.init_adapter);
  if (!config_.adapters.empty()) {
    const AdapterRegistry builtin;
    adapters_ = apply_adapters(*model_, config_.adapters, adapters ? *adapters : builtin,
                               config_.train.seed);
    if (!config_.train.init_adapter.empty())
      import_peft_weights(*model_, config_.train.init_adapter);
    place_model_on_device(*model_, device_);
    // Every rank decides together: a recipe whose adapters match nothing anywhere is an error.
    const double trainable =
        all_reduce_sum(groups_.world(), {static_cast<double>(trainable_parameter_elements())})[0];
    DST_CHECK(trainable > 0, ConfigError,
              config_.adapters.front().where
                  << ": the adapters add no trainable parameter (does target_modules match any "
                     "of "
                  << projection_names(*model_) << "?)");
    // The frozen base takes the parameter dtype here; the engines cast what trains.
    NamedParameters frozen;
    for (auto& item : model_->named_parameters(/*recurse=*/true))
      if (!item.value().requires_grad()) frozen.emplace_back(item.key(), item.value());
    weights.fill_deferred(frozen);
    torch::NoGradGuard no_grad;
    for (auto& [name, parameter] : frozen)
      parameter.set_data(parameter.to(
          device_, model_->keeps_fp32(name) ? torch::kFloat32 : scalar_type_of(precision.param)));
  }
  activation_dtype_ = scalar_type_of(precision.param);
  if (activation_dtype_ == torch::kFloat16) {
    // Parameters live on the CPU, where libtorch's fp16 matmul is a slow fallback (2.2 GFLOP/s
    // against 33 for fp32 at 384^3 on one thread, libtorch 2.11, AMD EPYC): keep fp16 storage
    // (and fp16 gradients, which the loss scaler protects) and compute activations in fp32.
    activation_dtype_ = torch::kFloat32;
    model_->set_compute_dtype(activation_dtype_);
    std::ostringstream line;
    line << "precision: fp16 parameters and gradients, fp32 compute on CPU, loss scale "
         << scaler_.scale();
    logger_.info(line.str());
  }
  // 3. Data parallelism (DDP, ZeRO, HSDP) over what trains, unit hooks, the pipeline.
  parallel_ = parallelize_data(model_, config_, groups_, activation_dtype_,
                               [&weights, this](NamedParameters& unit) {
                                 weights.fill_deferred(unit);
                                 place_on_device(unit, device_);
                               });
  if (!config_.train.init_from.empty())
    logger_.info("initialised from the Hugging Face model " + config_.train.init_from);
  if (const int64_t unused = weights.unused_layer_tensors(); unused > 0)
    logger_.info(std::to_string(unused) + " tensors of layers past num_hidden_layers=" +
                 std::to_string(config_.model.num_hidden_layers) + " (multi-token prediction) in " +
                 config_.train.init_from + " are not used");
  // 4. DP-SGD's secret (the noise's and Poisson sampling's key), agreed by every rank.
  if (config_.privacy.enabled())
    dp_sgd_ = std::make_unique<DpSgd>(
        config_.privacy, agreed_secret_key(groups_.world(), config_.privacy.noise_seed));
}

Trainer::~Trainer() {
  if (model_) model_->set_unit_hooks(nullptr);
}

std::vector<int64_t> Trainer::gradient_bucket_bytes() const {
  MemoryPlanInputs layout;
  for (const auto& engine : parallel_.engines) engine->describe_layout(layout);
  std::vector<int64_t> bytes;
  const int64_t element_bytes = bytes_of(PrecisionPolicy::from_options(config_.precision).param);
  for (int64_t elements : layout.gradient_bucket_elements)
    bytes.push_back(elements * element_bytes);
  return bytes;
}

std::vector<int64_t> Trainer::sharding_unit_sizes() const {
  MemoryPlanInputs layout;
  for (const auto& engine : parallel_.engines) engine->describe_layout(layout);
  return layout.zero_unit_padded_elements;
}

// ZeRO over a single data-parallel shard shards nothing, yet its flat buffers cost memory (on
// bench-medium, one rank: stage 1 +47%, stage 3 +39% over stage 0) and its updates equal stage
// 0's bit for bit: such a run uses stage 0.
void Trainer::run_unsharded_zero_as_stage_0() {
  const int stage = config_.data_parallel.zero_stage;
  if (stage == 0 || groups_.dims().dp > 1) return;
  logger_.info("parallel.zero_stage " + std::to_string(stage) +
               " with one data-parallel shard (dp 1) has nothing to shard: running as stage 0, "
               "which computes the same updates with less memory");
  config_.data_parallel.zero_stage = 0;
}

MemoryPlan Trainer::memory_plan() const {
  MemoryPlanInputs in;
  for (const auto& engine : parallel_.engines) engine->describe_layout(in);
  in.model = config_.model;
  in.precision = PrecisionPolicy::from_options(config_.precision);
  in.zero_stage = config_.data_parallel.zero_stage;
  const ParallelDims& mesh = groups_.dims();
  if (in.zero_stage == 0) {
    in.dp_size = mesh.data_parallel_size();
    in.dp_rank = groups_.coord().data_parallel_index(mesh);
  } else {
    in.dp_size = mesh.dp;
    in.dp_rank = groups_.coord().dp;
    in.dp_replicate_size = mesh.dp_replicate;
    in.dp_replicate_rank = groups_.coord().dp_replicate;
  }
  in.process_baseline_bytes = process_baseline_bytes_;
  in.micro_batch_size = config_.train.micro_batch_size;
  in.seq_len = config_.data.seq_len;
  in.grad_accum = config_.train.grad_accum;
  // Model parallelism: what this rank holds of the model and what it exchanges with tp and pp
  // peers.
  const ParallelDims& dims = groups_.dims();
  in.local_parameter_elements = trainable_parameter_elements();
  if (dims.ep > 1) {
    ExpertGroupLayout& experts = in.expert_group;
    for (const auto& item : model_->named_parameters(/*recurse=*/true))
      if (item.value().requires_grad() && model_->is_routed_expert(item.key()))
        experts.parameter_elements += item.value().numel();
    in.local_parameter_elements -= experts.parameter_elements;
    if (in.zero_stage == 0) {
      experts.dp_size = dims.expert_data_parallel_size();
      experts.dp_rank = groups_.coord().expert_data_parallel_index(dims);
    } else {
      experts.dp_size = dims.expert_shard_size();
      experts.dp_rank = groups_.coord().edp_index(dims);
      experts.dp_replicate_size = dims.dp_replicate;
      experts.dp_replicate_rank = groups_.coord().dp_replicate;
    }
    experts.ep_size = dims.ep;
    experts.ep_rank = groups_.coord().ep_index(dims);
  }
  in.frozen_parameter_elements = frozen_parameter_elements();
  in.tp_size = dims.tp;
  in.tp_rank = groups_.coord().tp;
  in.pp_size = dims.pp;
  in.pp_rank = groups_.coord().pp;
  in.local_layers = 0;
  in.has_embedding = in.has_head = false;
  in.fused_attention = model_->uses_fused_attention();
  in.has_moe = config_.model.has_moe();
  in.paired_step_sums = config_.moe.aux_loss_alpha > 0 || config_.privacy.enabled();
  const int checkpoint_every = config_.model_parallel.activation_checkpointing;
  for (const LayerChunk& chunk : model_->chunks()) {
    in.local_layers += chunk.end - chunk.begin;
    in.has_embedding = in.has_embedding || chunk.has_embedding;
    in.has_head = in.has_head || chunk.has_head;
    for (int64_t i = chunk.begin; i < chunk.end; ++i) {
      if (config_.model.is_moe_layer(i)) in.expert_load_elements += config_.model.n_routed_experts;
      TpLayerTraffic traffic = model_->tp_layer_traffic(i);
      traffic.recomputed = checkpoint_every > 0 && i % checkpoint_every == 0;
      if (dims.ep > 1 && config_.model.is_moe_layer(i)) {
        ++in.expert_group.moe_layers;
        if (traffic.recomputed) ++in.expert_group.recomputed_moe_layers;
      }
      if (traffic.recomputed) ++in.checkpointed_layers;
      in.tp_layer_traffic.push_back(std::move(traffic));
    }
    if (dims.pp > 1) {
      in.pipeline_activation_sends += chunk.has_head ? 0 : 1;
      in.pipeline_gradient_sends += chunk.has_embedding ? 0 : 1;
    }
  }
  // The model family's own activation estimate (the dense decoder's by default).
  in.activation_bytes = [model = model_, rows = in.micro_batch_size, seq = in.seq_len,
                         compute = in.precision.compute, layers = in.local_layers,
                         with_logits = in.has_head](int64_t checkpointed_layers) {
    return model->activation_bytes(rows, seq, compute, layers, with_logits, checkpointed_layers);
  };
  if (parallel_.embedding_group) {
    for (const ParameterStateSlice& slice : embedding_gradients()) {
      in.tied_embedding_sync_elements += slice.end - slice.begin;
      in.tied_embedding_sync_element_bytes =
          (slice.gradient.defined() ? slice.gradient : slice.parameter).element_size();
    }
    in.tied_embedding_sync_rank = parallel_.embedding_group->rank();
  }
  if (dims.pp > 1) {
    // Micro-batches whose activations a stage holds at its peak (schedule.h).
    const int64_t m = config_.train.grad_accum, p = dims.pp, r = groups_.coord().pp;
    const int64_t v = config_.model_parallel.virtual_stages;
    const ScheduleKind kind = parse_schedule_kind(config_.model_parallel.schedule);
    if (kind == ScheduleKind::kGPipe) {
      in.pipeline_in_flight = m;
    } else if (kind == ScheduleKind::kOneFOneB) {
      in.pipeline_in_flight = std::min(p - r, m);
    } else {
      const int64_t chunks = std::min((p - r - 1) * 2 + (v - 1) * p + 1, m * v);
      in.pipeline_in_flight = (chunks + v - 1) / v;
    }
  }
  return plan_memory(in);
}

int64_t Trainer::trainable_parameter_elements() const {
  int64_t elements = 0;
  for (const auto& p : model_->parameters())
    if (p.requires_grad()) elements += p.numel();
  return elements;
}

int64_t Trainer::frozen_parameter_elements() const {
  int64_t elements = 0;
  for (const auto& p : model_->parameters())
    if (!p.requires_grad()) elements += p.numel();
  return elements;
}

std::vector<std::pair<std::string, torch::Tensor>> Trainer::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> result;
  for (const auto& item : model_->named_parameters(/*recurse=*/true))
    result.emplace_back(item.key(), item.value());
  return result;
}

std::vector<std::pair<std::string, torch::Tensor>> Trainer::full_parameters() {
  for (auto& engine : parallel_.engines) engine->gather_parameters();
  std::vector<std::pair<std::string, torch::Tensor>> result;
  const int ep = groups_.dims().ep;
  // Under expert parallelism a layer's local experts (a run of consecutive parameters) are
  // gathered from every ep rank and listed rank by rank: the global expert order.
  std::vector<std::pair<std::string, torch::Tensor>> expert_run;  // name, [ep, local shape]
  const auto flush_experts = [&] {
    for (int r = 0; r < ep; ++r)
      for (const auto& [name, all] : expert_run)
        result.emplace_back(model_->routed_expert_name_on(name, r), all[r]);
    expert_run.clear();
  };
  for (const auto& item : model_->named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    torch::Tensor full = model_->gather_tp_parameter(name, item.value());
    if (ep == 1 || !model_->is_routed_expert(name)) {
      flush_experts();
      result.emplace_back(name, full);
      continue;
    }
    // Collective over ep, in the same parameter order on every rank.
    std::vector<int64_t> shape{ep};
    shape.insert(shape.end(), full.sizes().begin(), full.sizes().end());
    torch::Tensor all = torch::empty({ep * full.numel()}, full.options());
    groups_.ep().all_gather(all, full.contiguous().view({-1}))->wait();
    expert_run.emplace_back(name, all.view(shape));
  }
  flush_experts();
  for (auto& engine : parallel_.engines) engine->release_parameters();
  return result;
}

std::vector<ParameterStateSlice> Trainer::embedding_gradients() const {
  std::vector<ParameterStateSlice> slices;
  if (!parallel_.embedding_group) return slices;
  for (ParameterStateSlice& slice :
       parallel_.engines.at(parallel_.embedding_engine)->state_slices())
    if (model_->is_embedding(slice.name)) slices.push_back(std::move(slice));
  return slices;
}

void Trainer::sync_tied_embedding_gradients() {
  std::vector<comm::WorkPtr> works;
  for (ParameterStateSlice& slice : embedding_gradients()) {
    DST_ASSERT(slice.gradient.defined() && slice.gradient.is_contiguous(),
               "tied embedding gradient of '" << slice.name << "' is not a contiguous tensor");
    works.push_back(parallel_.embedding_group->all_reduce(slice.gradient, comm::ReduceOp::kSum));
  }
  comm::wait_all(works);
}

comm::CommStats Trainer::comm_stats() const {
  comm::CommStats stats = groups_.total_stats();
  if (parallel_.embedding_group && parallel_.embedding_group != groups_.pp_ptr())
    stats.accumulate(parallel_.embedding_group->stats());
  return stats;
}

double Trainer::whole_model_elements(bool trainable) {
  bool holds_embedding = false;
  for (const LayerChunk& chunk : model_->chunks()) holds_embedding |= chunk.has_embedding;
  double local = 0, experts = 0;
  for (const auto& item : model_->named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    if (item.value().requires_grad() != trainable) continue;
    // Each element once: tp-replicated tensors on tp rank 0, the tied copy not at all, the routed
    // experts of every ep rank.
    if (model_->tp_split(name) == TpSplit::kReplicated && groups_.coord().tp != 0) continue;
    if (model_->is_embedding(name) && !holds_embedding) continue;
    (model_->is_routed_expert(name) ? experts : local) += static_cast<double>(item.value().numel());
  }
  if (groups_.dims().ep > 1) experts = all_reduce_sum(groups_.ep(), {experts})[0];
  local += experts;
  if (groups_.dims().tp > 1) local = all_reduce_sum(groups_.tp(), {local})[0];
  if (groups_.dims().pp > 1) local = all_reduce_sum(groups_.pp(), {local})[0];
  return local;
}

std::vector<double> Trainer::sum_over_data_and_pipeline(std::vector<double> values) {
  values = all_reduce_sum(groups_.data_parallel(), values);
  if (groups_.dims().pp > 1) values = all_reduce_sum(groups_.pp(), values);
  return values;
}

double Trainer::global_grad_norm(double loss_scale) {
  double squared = 0.0;
  for (auto& engine : parallel_.engines) squared += engine->local_grad_squared_norm();
  if (parallel_.engines.front()->gradients_sharded())
    squared = all_reduce_sum(groups_.dp(), {squared})[0];
  if (groups_.dims().tp > 1) squared = all_reduce_sum(groups_.tp(), {squared})[0];
  if (groups_.dims().pp > 1) squared = all_reduce_sum(groups_.pp(), {squared})[0];
  return std::sqrt(squared) / loss_scale;
}

std::vector<MicroBatch> Trainer::on_device(const std::vector<MicroBatch>& batches) const {
  if (device_.is_cpu()) return batches;
  // Pinned host memory, so the copies are asynchronous DMA ordered on the current stream.
  const auto move = [this](const torch::Tensor& t) {
    return (t.is_pinned() ? t : t.pin_memory()).to(device_, /*non_blocking=*/true);
  };
  std::vector<MicroBatch> moved;
  for (const MicroBatch& mb : batches) moved.push_back({move(mb.input_ids), move(mb.labels)});
  return moved;
}

StepResult Trainer::train_step(const std::vector<MicroBatch>& batches) {
  DST_CHECK(!batches.empty(), DataError, "train_step: no micro-batches");
  const std::vector<MicroBatch> micro_batches = on_device(batches);
  const int world_rank = groups_.world().rank();
  fault_plan_.at(world_rank, step_ + 1, "step_begin");
  *poison_gradient_ = fault_plan_.action() == FaultPlan::Action::kNanGradient &&
                      fault_plan_.targets(world_rank, step_ + 1);
  const auto start = Clock::now();
  const comm::CommStats stats_before = comm_stats();
  comm::Communicator& dp = groups_.data_parallel();
  model_->train();

  // The step's loss is the mean over every target token of every rank's micro-batches, so each
  // micro-batch's summed loss is divided by the global count (known before any backward). The
  // balance loss is a mean over every sequence of the step in the same way.
  // Under DP-SGD the second values are the examples (rows with a target token) and, after
  // backward, the clipped ones (moe.aux_loss_alpha is refused with it).
  const double alpha = config_.moe.aux_loss_alpha;
  const bool private_step = dp_sgd_ != nullptr;
  double local_tokens = 0, local_sequences = 0, local_examples = 0;
  for (const MicroBatch& mb : micro_batches) {
    local_tokens += count_target_tokens(mb.labels);
    local_sequences += static_cast<double>(mb.input_ids.size(0));
    if (private_step) local_examples += mb.labels.ne(kIgnoreIndex).any(1).sum().item<double>();
  }
  std::vector<double> counts{local_tokens};
  if (alpha > 0) counts.push_back(local_sequences);
  if (private_step) counts.push_back(local_examples);
  counts = all_reduce_sum(dp, counts);
  const double global_tokens = counts[0];
  // A Poisson-sampled step may hold no example at all: it still adds its noise.
  DST_CHECK(global_tokens > 0 || private_step, DataError,
            "train_step: the step has no target tokens");

  for (auto& engine : parallel_.engines) engine->zero_grad();
  const double loss_scale = scaler_.scale();
  if (alpha > 0) model_->set_balance_loss_weight(alpha * loss_scale / counts[1]);
  double local_loss_sum = 0.0, pipeline_wait = 0.0, local_clipped = 0.0;
  if (parallel_.pipeline) {
    local_loss_sum = parallel_.pipeline->train_step(micro_batches, loss_scale, global_tokens);
    pipeline_wait = parallel_.pipeline->last_wait_seconds();
    sync_tied_embedding_gradients();
  } else if (private_step) {
    local_loss_sum = private_backward(micro_batches, &local_clipped);
  } else {
    DataParallelEngine& engine = *parallel_.engines.front();
    for (size_t k = 0; k < micro_batches.size(); ++k) {
      engine.set_sync(k + 1 == micro_batches.size());
      torch::Tensor logits = model_->forward_chunk(0, micro_batches[k].input_ids);
      torch::Tensor loss_sum = model_->loss_sum(logits, micro_batches[k].labels);
      (loss_scale == 1.0 ? loss_sum / global_tokens : loss_sum * (loss_scale / global_tokens))
          .backward();
      local_loss_sum += loss_sum.item<double>();
      engine.finish_backward();
    }
  }
  std::vector<double> sums{local_loss_sum};
  if (alpha > 0) sums.push_back(model_->take_balance_loss());
  if (private_step) sums.push_back(local_clipped);
  sums = sum_over_data_and_pipeline(sums);
  const double loss = global_tokens > 0 ? sums[0] / global_tokens : 0.0;
  const double balance_loss = alpha > 0 ? alpha * sums[1] / counts[1] : 0.0;
  *poison_gradient_ = false;
  fault_plan_.at(world_rank, step_ + 1, "backward");

  std::optional<PrivacyReport> privacy;
  if (private_step)
    privacy = dp_sgd_->finish_step(parallel_.engines, step_ + 1, static_cast<int64_t>(counts[1]),
                                   static_cast<int64_t>(sums[1]));
  const double lr =
      learning_rate_at(step_, config_.train.steps, config_.optim.lr, config_.schedule);
  // The norm is agreed by every rank, so all of them apply or skip the update together.
  const double grad_norm = global_grad_norm(loss_scale);
  // Loss and norm are all-reduced, so every rank takes the same branch.
  const bool nonfinite = !std::isfinite(loss) || !std::isfinite(grad_norm);
  const std::string first_bad = nonfinite ? first_nonfinite_gradient() : std::string();
  const bool apply = scaler_.update(nonfinite);
  const double multiplier = gradient_multiplier(grad_norm, config_.optim.grad_clip, loss_scale);
  if (apply)
    for (auto& engine : parallel_.engines) engine->step(lr, multiplier);
  const ExpertLoadStatistics expert_loads = load_balancer_.after_step(
      *model_, groups_.data_parallel(), groups_.dims().pp > 1 ? &groups_.pp() : nullptr, apply);
  ++step_;
  fault_plan_.at(world_rank, step_, "step_end");
  // Under fp16 loss scaling a gradient overflow with a finite loss is the scaler's business (it
  // halves the scale and retries); only a non-finite loss counts towards an abort then.
  const bool scaler_overflow = scaler_.enabled() && std::isfinite(loss);
  consecutive_nonfinite_steps_ = apply || scaler_overflow ? 0 : consecutive_nonfinite_steps_ + 1;
  if (!apply) {
    const TrainOptions& options = config_.train;
    std::ostringstream what;
    what << "step " << step_ << ": loss " << loss << ", gradient norm " << grad_norm
         << "; first non-finite gradient: "
         << (first_bad.empty() ? std::string("none (only the loss)") : first_bad);
    DST_CHECK(options.nonfinite_policy != "abort" || scaler_overflow ||
                  consecutive_nonfinite_steps_ < options.nonfinite_max_consecutive,
              NumericsError,
              what.str() << "; " << consecutive_nonfinite_steps_
                         << " consecutive non-finite steps reached train.nonfinite.max_consecutive "
                            "(policy abort); no update was applied, checkpoints hold only finite "
                            "values");
    // fp16 overflows are routine (the scaler halves its scale); anything else is worth a line.
    if (!scaler_.enabled()) logger_.warn(what.str() + "; update skipped on every rank");
  }

  const comm::CommStats stats_after = comm_stats();
  StepResult result;
  result.step = step_;
  result.loss = loss;
  result.grad_norm = grad_norm;
  result.lr = lr;
  result.loss_scale = loss_scale;
  result.skipped = !apply;
  result.first_nonfinite_gradient = first_bad;
  result.pipeline_wait_seconds = pipeline_wait;
  result.expert_load_max_over_mean = expert_loads.max_over_mean;
  result.dropped_tokens = expert_loads.dropped_tokens;
  result.balance_loss = balance_loss;
  result.privacy = privacy;
  result.tokens = static_cast<int64_t>(global_tokens);
  result.seconds = seconds_since(start);
  result.comm_bytes = stats_after.total_bytes() - stats_before.total_bytes();
  result.comm_wait_seconds = stats_after.total_wait_seconds() - stats_before.total_wait_seconds();
  for (int op = 0; op < comm::kNumOpTypes; ++op) {
    const auto type = static_cast<comm::OpType>(op);
    const uint64_t bytes = stats_after.at(type).bytes - stats_before.at(type).bytes;
    if (bytes > 0) result.comm_bytes_by_op[comm::op_name(type)] = bytes;
    const double wait = stats_after.at(type).wait_seconds - stats_before.at(type).wait_seconds;
    if (wait > 0) result.comm_wait_seconds_by_op[comm::op_name(type)] = wait;
  }
  return result;
}

void Trainer::set_fault_plan(FaultPlan plan) {
  fault_plan_ = std::move(plan);
  const int rank = groups_.world().rank();
  checkpoint_writer_->set_fault_hook(
      [plan = fault_plan_, rank](int64_t step, const char* point) { plan.at(rank, step, point); });
  if (fault_plan_.action() != FaultPlan::Action::kNanGradient) return;
  auto parameters = model_->named_parameters(/*recurse=*/true);
  torch::Tensor* parameter = parameters.find(fault_plan_.parameter());
  if (parameter == nullptr) return;  // held by another pipeline stage
  parameter->register_hook([armed = poison_gradient_](const torch::Tensor& grad) {
    return *armed ? torch::full_like(grad, std::numeric_limits<float>::quiet_NaN()) : grad;
  });
}

std::string Trainer::first_nonfinite_gradient() {
  // Each rank finds its first non-finite gradient in its model order; the world agrees on the
  // smallest (pipeline stage, position) and every rank holding that name spells it out.
  const auto parameters = model_->named_parameters(/*recurse=*/true);
  std::map<std::string, int64_t> position;
  for (const auto& item : parameters) position.emplace(item.key(), position.size());
  int64_t best = std::numeric_limits<int64_t>::max();
  std::string name;
  for (auto& engine : parallel_.engines)
    for (const ParameterStateSlice& slice : engine->state_slices()) {
      if (!slice.gradient.defined() || slice.gradient.numel() == 0) continue;
      if (slice.gradient.isfinite().all().item<bool>()) continue;
      const auto found = position.find(slice.name);
      const int64_t at = found == position.end() ? int64_t(position.size()) : found->second;
      if (at < best) best = at, name = slice.name;
    }
  const int64_t stage = groups_.coord().pp;
  constexpr int64_t kPerStage = int64_t(1) << 32;
  constexpr double kNone = std::numeric_limits<double>::lowest();
  const double key = best == std::numeric_limits<int64_t>::max()
                         ? kNone
                         : -static_cast<double>(stage * kPerStage + best);
  comm::Communicator& world = groups_.world();
  at::Tensor agreed = at::full({1}, key, at::kDouble);
  world.all_reduce(agreed, comm::ReduceOp::kMax)->wait();
  const double winner = agreed.item<double>();
  constexpr int64_t kNameBytes = 512;
  at::Tensor spelled = at::zeros({kNameBytes}, at::kByte);
  if (winner != kNone && winner == key) {
    const size_t n = std::min<size_t>(name.size(), kNameBytes - 1);
    std::memcpy(spelled.data_ptr(), name.data(), n);
  }
  world.all_reduce(spelled, comm::ReduceOp::kMax)->wait();
  return std::string(static_cast<const char*>(spelled.data_ptr()));
}

double Trainer::evaluate(const std::vector<MicroBatch>& batches) {
  const auto [loss_sum, tokens] = evaluate_sums(batches);
  DST_CHECK(tokens > 0, DataError, "evaluate: no target tokens in the evaluation batches");
  return loss_sum / tokens;
}

std::pair<double, double> Trainer::evaluate_sums(const std::vector<MicroBatch>& host_batches) {
  const std::vector<MicroBatch> batches = on_device(host_batches);
  torch::NoGradGuard no_grad;
  const bool was_training = model_->is_training();
  model_->eval();
  double loss_sum = 0.0, tokens = 0.0;
  if (parallel_.pipeline) {
    loss_sum = parallel_.pipeline->evaluate(batches);
  } else {
    for (const MicroBatch& mb : batches)
      loss_sum +=
          model_->loss_sum(model_->forward_chunk(0, mb.input_ids), mb.labels).item<double>();
  }
  for (const MicroBatch& mb : batches) tokens += count_target_tokens(mb.labels);
  const double total_loss = sum_over_data_and_pipeline({loss_sum})[0];
  const double total_tokens = all_reduce_sum(groups_.data_parallel(), {tokens})[0];
  model_->train(was_training);
  return {total_loss, total_tokens};
}

std::vector<std::pair<std::string, torch::Tensor>> Trainer::full_model_on_rank0() {
  auto weights = full_parameters();  // collective under ZeRO-3 and tp
  if (groups_.dims().pp > 1 && groups_.coord().data_parallel_index(groups_.dims()) == 0 &&
      groups_.coord().tp == 0)
    weights = collect_pipeline_stages(groups_.pp(), std::move(weights));
  if (groups_.world().rank() != 0) weights.clear();
  return weights;
}

void Trainer::export_adapters(const std::string& directory, const std::string& merged_directory) {
  const auto weights = full_model_on_rank0();
  if (groups_.world().rank() == 0 && !adapters_.empty()) {
    std::map<std::string, torch::Tensor> full(weights.begin(), weights.end());
    for (size_t i = 0; i < adapters_.size(); ++i) {
      const Adapter& adapter = *adapters_[i];
      const std::filesystem::path target = adapters_.size() == 1
                                               ? std::filesystem::path(directory)
                                               : std::filesystem::path(directory) / adapter.type();
      const PeftAdapterFiles files = adapter.peft_files(full, config_.model);
      write_export(target.string(), [&](const std::filesystem::path& folder) {
        save_safetensors((folder / "adapter_model.safetensors").string(), files.tensors);
        write_file_atomically((folder / "adapter_config.json").string(), files.config_json);
        write_provenance(folder.string());
      });
      logger_.info("adapter (" + adapter.type() + ", PEFT format): " + target.string());
    }
    if (!merged_directory.empty()) {
      bool mergeable = true;
      for (const auto& adapter : adapters_) mergeable = mergeable && adapter->merge_into(full);
      if (mergeable) {
        const std::vector<std::pair<std::string, torch::Tensor>> merged(full.begin(), full.end());
        write_export(merged_directory, [&](const std::filesystem::path& folder) {
          export_hf_model(folder.string(), config_.model, merged,
                          scalar_type_of(PrecisionPolicy::from_options(config_.precision).param));
          write_provenance(folder.string());
        });
        logger_.info("merged Hugging Face model: " + merged_directory);
      }
    }
  }
  groups_.world().barrier()->wait();
}

std::string Trainer::write_provenance(const std::string& directory) {
  const std::string path = (std::filesystem::path(directory) / "provenance.json").string();
  write_file_atomically(path, nlohmann::json::parse(provenance_json()).dump(2) + "\n");
  return path;
}

void Trainer::write_export(const std::string& directory,
                           const std::function<void(const std::filesystem::path&)>& write) {
  if (!config_.checkpoint.encrypt_exports) {
    std::filesystem::create_directories(directory);
    write(directory);
    return;
  }
  const ExportStaging staging;
  write(staging.path());
  staging.seal_into(*encryption_key_, directory);
}

std::string Trainer::save_weights(const std::string& directory) {
  const std::string path = (std::filesystem::path(directory) / "model.h5").string();
  const auto weights = full_model_on_rank0();
  if (groups_.world().rank() == 0) {
    write_export(directory, [&](const std::filesystem::path& folder) {
      save_weights_file((folder / "model.h5").string(), weights);
      save_hf_config_json((folder / "config.json").string(), config_.model);
      write_provenance(folder.string());
    });
  }
  groups_.world().barrier()->wait();
  return path;
}

void Trainer::log_run_plan(const TrainingData& data, const BatchSampler& sampler, double peak_flops,
                           const std::string& peak_source) {
  std::ostringstream plan;
  plan << "model: " << config_.model.model_type << ", " << config_.model.num_parameters()
       << " parameters, " << config_.model.num_hidden_layers << " layers, hidden "
       << config_.model.hidden_size << "; data: " << data.train->size() << " train / "
       << data.validation->size() << " validation sequences of " << config_.data.seq_len
       << " tokens; global batch " << sampler.expected_global_batch() << " sequences ("
       << groups_.dims().data_parallel_size() << " ranks x " << config_.train.grad_accum
       << " micro-batches x " << config_.train.micro_batch_size << "); "
       << "ZeRO stage " << config_.data_parallel.zero_stage;
  if (!adapters_.empty()) {
    const double trainable = whole_model_elements(/*trainable=*/true);
    const double frozen = whole_model_elements(/*trainable=*/false);
    plan << "; adapters:";
    for (const auto& adapter : adapters_) plan << " " << adapter->type();
    char share[32];
    std::snprintf(share, sizeof(share), "%.3f%%", 100.0 * trainable / (trainable + frozen));
    plan << " (" << format_count(trainable) << " trainable parameters, " << share
         << " of the model; the base is frozen)";
  }
  logger_.info(plan.str());
  if (const std::optional<PrivacyProvenance> privacy = privacy_provenance()) {
    RdpAccountant planned;  // the steps taken (a resumed run's) and those to come
    for (const PrivacySegment& taken : privacy->history)
      planned.step(taken.noise_multiplier, taken.sample_rate, taken.steps);
    if (config_.train.steps > step_)
      planned.step(privacy->noise_multiplier, privacy->sample_rate, config_.train.steps - step_);
    std::ostringstream line;
    line << "DP-SGD: every example's gradient clipped to " << privacy->max_grad_norm
         << ", noise multiplier " << privacy->noise_multiplier << ", " << privacy->sampling
         << " sampling at rate " << privacy->sample_rate << "; epsilon after "
         << config_.train.steps << " steps: " << planned.spent(privacy->delta).epsilon
         << " at delta " << privacy->delta;
    logger_.info(line.str());
  }
  logger_.info(memory_plan().describe());
  std::ostringstream denominator;
  denominator << "MFU denominator: " << std::fixed << std::setprecision(1)
              << peak_flops / groups_.world().size() / 1e9 << " GFLOP/s per rank (" << peak_source
              << ")";
  logger_.info(denominator.str());
}

// This rank's FLOP/s for MFU: train.peak_flops_per_rank, a known GPU's dense bf16 peak, or a
// matmul measured in the compute dtype; `source` says which.
double Trainer::rank_peak_flops(std::string* source) const {
  if (config_.train.peak_flops_per_rank > 0) {
    *source = "train.peak_flops_per_rank";
    return config_.train.peak_flops_per_rank;
  }
  if (device_.is_cuda()) {
    const std::string name = device_name(device_);
    if (const std::optional<double> peak = gpu_dense_bf16_peak_flops(name)) {
      *source = "dense bf16 peak of " + name;
      return *peak;
    }
  }
  *source = std::string("measured ") + c10::toString(activation_dtype_) + " matmul" +
            (device_.is_cpu() && activation_dtype_ == torch::kBFloat16 && !cpu_has_bf16_matmul()
                 ? ", computed in fp32 on this CPU"
                 : "");
  return measure_matmul_flops(0.2, activation_dtype_, device_);
}

// Saves what the step's policy asks for; a new best is committed before it is marked.
void Trainer::save_due_checkpoint(CheckpointSave save, const BatchSampler& sampler) {
  if (save == CheckpointSave::kNone) return;
  const std::string directory = save_checkpoint(sampler.serialize());
  if (save != CheckpointSave::kBest) return;
  wait_for_checkpoint();
  if (groups_.world().rank() == 0) mark_best_checkpoint(checkpoint_root(), directory);
}

// A whole run, in order: data, resume, outputs, the untrained evaluation, the steps (each
// recorded, evaluated when due, checkpointed by the policy, maybe stopping early), then the
// final weights and adapter exports.
TrainSummary Trainer::run() {
  const TrainOptions& opts = config_.train;
  // A resume that cannot work fails before any data is read.
  const std::string resume_from =
      opts.resume.empty() ? "" : resolve_checkpoint(checkpoint_root(), opts.resume);
  const TrainingData data = load_training_data(config_.data, config_.model.vocab_size);
  const int dp_rank = groups_.coord().data_parallel_index(groups_.dims());
  const int dp_size = groups_.dims().data_parallel_size();
  const std::unique_ptr<BatchSampler> sampler_holder = make_sampler(data);
  BatchSampler& sampler = *sampler_holder;
  if (!resume_from.empty()) sampler.deserialize(load_checkpoint(resume_from));
  // DP-SGD's plan: q and E[B] from the sampler, σ over the steps still to take.
  if (dp_sgd_)
    plan_privacy(sampler.expected_global_batch() / static_cast<double>(data.train->size()),
                 sampler.expected_global_batch());
  const std::vector<MicroBatch> eval_batches = validation_batches(
      *data.validation, opts.eval_batches, opts.micro_batch_size, dp_rank, dp_size);
  // Rank 0's outputs open before the first step: an unusable output directory fails at once.
  RunOutputs outputs(opts, groups_.world(), resume_from.empty() ? -1 : step_, logger_);

  // MFU: 6 FLOPs per parameter per token against every rank's matmul rate in the compute dtype
  // (train.peak_flops_per_rank, or measured here with the training thread count). A MoE model
  // counts the parameters a token computes with (not the routed experts it is not sent to).
  const double model_parameters =
      whole_model_elements(true) + whole_model_elements(false) -
      static_cast<double>(config_.model.num_parameters() - config_.model.num_active_parameters());
  std::string peak_source;
  const double peak_flops = all_reduce_sum(groups_.world(), {rank_peak_flops(&peak_source)})[0];
  log_run_plan(data, sampler, peak_flops, peak_source);

  TrainSummary summary;
  summary.initial_eval_loss = evaluate(eval_batches);
  outputs.write_eval(step_, summary.initial_eval_loss);
  EarlyStopping stopping(opts, summary.initial_eval_loss);
  StepMetricsRecorder recorder(groups_.world_ptr(), opts.steps, step_, model_parameters, peak_flops,
                               memory_plan().peak() / (1024.0 * 1024.0));
  recorder.set_device(device_, memory_plan().device_peak() / (1024.0 * 1024.0));
  while (step_ < opts.steps && !summary.stopped_early) {
    std::vector<MicroBatch> micro_batches;
    for (const auto& indices : sampler.next_step())
      micro_batches.push_back(micro_batch_of(*data.train, indices));
    const StepResult result = train_step(micro_batches);
    StepMetrics metrics = recorder.record(result, scaler_.skipped_steps());
    EarlyStopping::Verdict verdict;
    if (evaluation_due(opts, result.step)) {
      metrics.eval_loss = evaluate(eval_batches);
      summary.final_eval_loss = *metrics.eval_loss;
      // Every rank sees the same (all-reduced) loss, so every rank decides the same.
      verdict = stopping.observe(result.step, *metrics.eval_loss);
    }
    outputs.write_step(metrics, recorder);
    summary.final_loss = result.loss;
    summary.stopped_early = verdict.stop;
    const CheckpointSave save =
        checkpoint_due(config_.checkpoint, result.step, result.step == opts.steps || verdict.stop,
                       verdict.new_best);
    if (save != CheckpointSave::kNone || verdict.stop) outputs.clear_bar();  // they log a line
    save_due_checkpoint(save, sampler);
  }
  summary.best_eval_loss = stopping.best_loss();
  summary.best_step = stopping.best_step();
  if (summary.stopped_early) {
    std::ostringstream line;
    line << "early stopping at step " << step_ << ": no improvement of the eval loss by "
         << opts.early_stopping_min_delta << " in " << opts.early_stopping_patience
         << " evaluations (best " << summary.best_eval_loss << " at step " << summary.best_step
         << ")";
    logger_.info(line.str());
  }
  outputs.finish();
  wait_for_checkpoint();
  summary.steps = step_;
  summary.tokens_per_second = recorder.tokens_per_second();
  const double training_seconds = recorder.elapsed_seconds();  // before the exports
  summary.weights_path = save_weights(opts.output_dir);
  if (!adapters_.empty()) {
    const std::filesystem::path out(opts.output_dir);
    export_adapters((out / "adapter").string(), (out / "merged").string());
  }
  std::ostringstream done;
  done << "done: " << step_ << " steps in " << format_duration(training_seconds) << ", "
       << format_count(summary.tokens_per_second) << " tok/s; eval loss "
       << summary.initial_eval_loss << " -> " << summary.final_eval_loss << "; weights "
       << summary.weights_path;
  logger_.info(done.str());
  if (const std::optional<PrivacyProvenance> privacy = privacy_provenance()) {
    std::ostringstream line;
    line << "privacy: epsilon " << privacy->epsilon << " at delta " << privacy->delta << " after "
         << privacy->steps << " DP-SGD steps (RDP accountant)";
    logger_.info(line.str());
  }
  return summary;
}

}  // namespace dst

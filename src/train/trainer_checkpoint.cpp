// Trainer <-> sharded checkpoints: what each rank saves (the state its engines own, placed in the
// global tensors) and how any layout restores it.
#include <torch/torch.h>

#include <filesystem>
#include <mutex>

#include "deepseek_train/checkpoint/hf_interop.h"
#include "deepseek_train/core/device.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/precision/precision_policy.h"
#include "deepseek_train/train/provenance.h"
#include "deepseek_train/train/trainer.h"
#include "deepseek_train/version.h"

namespace dst {

namespace {

// The default CPU generator's state is saved per rank (restored on the same world size only):
// nothing in training draws from it yet, but dropout and data augmentation will.
std::string rng_tensor_name(const std::string& device, int rank) {
  return "rng.torch_" + device + ".rank-" + std::to_string(rank);
}

// The optimizer-side tensors of a slice that checkpoints hold, by kind.
std::vector<std::pair<const char*, torch::Tensor>> optimizer_state(const ParameterStateSlice& s) {
  return {{"master", s.master}, {"exp_avg", s.exp_avg}, {"exp_avg_sq", s.exp_avg_sq}};
}

}  // namespace

std::string Trainer::checkpoint_root() const {
  return (std::filesystem::path(config_.train.output_dir) / "checkpoints").string();
}

std::optional<EncryptionKey> Trainer::load_encryption_key() const {
  return dst::load_encryption_key(config_.checkpoint.encryption);
}

PieceLocation Trainer::location_of(const std::string& name, const torch::Tensor& local,
                                   int64_t begin, int64_t end) const {
  PieceLocation location;
  location.begin = begin;
  location.end = end;
  switch (model_->tp_split(name)) {
    case TpSplit::kReplicated:
      location.split_dim = -1;
      location.block_length = 0;
      return location;
    case TpSplit::kDim0:
      location.split_dim = 0;
      break;
    case TpSplit::kDim1:
      location.split_dim = 1;
      break;
  }
  location.block_length = local.size(location.split_dim);
  location.block_start = groups_.coord().tp * location.block_length;
  return location;
}

std::vector<ParameterStateSlice> Trainer::engine_state_slices() {
  std::vector<ParameterStateSlice> slices;
  for (auto& engine : parallel_.engines)
    for (ParameterStateSlice& slice : engine->state_slices()) slices.push_back(std::move(slice));
  return slices;
}

// The generators whose states a checkpoint keeps per rank: the CPU's and, on a GPU, the device's
// (dropout draws there), each with its tensor name.
std::vector<std::pair<std::string, at::Generator>> Trainer::random_generators() const {
  const int rank = groups_.world().rank();
  std::vector<std::pair<std::string, at::Generator>> named;
  for (const at::Generator& generator : default_generators(device_))
    named.emplace_back(rng_tensor_name(generator.device().is_cuda() ? "cuda" : "cpu", rank),
                       generator);
  return named;
}

std::vector<StatePiece> Trainer::state_pieces() {
  const bool narrow_parameters =
      PrecisionPolicy::from_options(config_.precision).param != Precision::kFloat32;
  const MeshCoord& coord = groups_.coord();
  const int data_parallel_rank = coord.data_parallel_index(groups_.dims()), tp_rank = coord.tp;
  const auto parameters = model_->named_parameters(/*recurse=*/true);
  std::vector<StatePiece> pieces;
  for (size_t e = 0; e < parallel_.engines.size(); ++e) {
    DataParallelEngine& engine = *parallel_.engines[e];
    // Replicated state is written by the first rank of its data-parallel group only, sharded
    // state by the first HSDP replica only (saved_here); the last stage's copy of a tied
    // embedding and tp-replicated parameters by their first holder only.
    const bool embedding_copy = model_->holds_embedding_copy(model_->chunks()[e]);
    for (ParameterStateSlice& slice : engine.state_slices()) {
      if (!slice.saved_here) continue;
      if (embedding_copy && model_->is_embedding(slice.name)) continue;
      if (model_->tp_split(slice.name) == TpSplit::kReplicated && tp_rank != 0) continue;
      const torch::Tensor& local = parameters[slice.name];
      StatePiece piece;
      piece.tensor = slice.name;
      piece.global_shape = model_->full_shape(slice.name, local);
      piece.location = location_of(slice.name, local, slice.begin, slice.end);
      for (const auto& [kind, data] : optimizer_state(slice)) {
        piece.kind = kind;
        piece.data = data;
        pieces.push_back(piece);
      }
      if (narrow_parameters) {
        piece.kind = "param";
        piece.data = slice.parameter;
        pieces.push_back(piece);
      }
    }
  }
  // Frozen parameters (a base under adapters) are replicated over dp: dp rank 0 writes them as
  // fp32 "master" pieces (no optimizer state), so checkpoints stay complete and convertible.
  bool holds_embedding = false;
  for (const LayerChunk& chunk : model_->chunks()) holds_embedding |= chunk.has_embedding;
  for (const auto& item : parameters) {
    const std::string& name = item.key();
    const torch::Tensor& local = item.value();
    if (local.requires_grad()) continue;
    // A frozen routed expert is replicated over its expert-data-parallel group only.
    const bool expert = model_->is_routed_expert(name);
    if ((expert ? coord.expert_data_parallel_index(groups_.dims()) : data_parallel_rank) != 0)
      continue;
    if (model_->is_embedding(name) && !holds_embedding)
      continue;  // the tied copy on the last stage
    if (model_->tp_split(name) == TpSplit::kReplicated && tp_rank != 0) continue;
    StatePiece piece;
    piece.tensor = name;
    piece.kind = "master";
    piece.global_shape = model_->full_shape(name, local);
    piece.location = location_of(name, local, 0, local.numel());
    piece.data = local.detach().to(torch::kFloat32).reshape({-1});
    pieces.push_back(std::move(piece));
  }
  for (auto& [name, generator] : random_generators()) {
    torch::Tensor state;
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      state = generator.get_state();
    }
    StatePiece rng;
    rng.tensor = name;
    rng.kind = "rng";
    rng.global_shape = {state.numel()};
    rng.location.end = state.numel();
    rng.data = state.reshape({-1});
    pieces.push_back(std::move(rng));
  }
  return pieces;
}

std::string Trainer::save_checkpoint(const std::string& sampler_state) {
  CheckpointInfo info;
  info.step = step_;
  info.optimizer_steps = parallel_.engines.front()->optimizer_steps();
  info.sampler_state = sampler_state;
  const LossScalerState scaler = scaler_.state();
  info.loss_scale = scaler.scale;
  info.loss_scaler_clean_steps = scaler.clean_steps;
  info.skipped_steps = scaler.skipped_steps;
  const ParallelDims& dims = groups_.dims();
  info.layout = {groups_.world().size(),
                 dims.data_parallel_size(),  // the checkpoint is layout-free: dp is recorded
                 dims.tp,
                 dims.pp,
                 config_.data_parallel.zero_stage,
                 config_.model_parallel.virtual_stages};
  info.model = config_.model;
  info.param_dtype =
      checkpoint_dtype_name(scalar_type_of(PrecisionPolicy::from_options(config_.precision).param));
  info.recipe = recipe_text_;
  info.provenance = provenance_json();
  info.library_version = kVersion;
  std::vector<StatePiece> pieces = state_pieces();
  check_finite_state(pieces);
  const std::string directory =
      checkpoint_writer_->save(checkpoint_root(), info, std::move(pieces), config_.checkpoint.async,
                               config_.checkpoint.keep_last);
  logger_.info(std::string(config_.checkpoint.async ? "checkpoint (writing in background): "
                                                    : "checkpoint: ") +
               directory);
  return directory;
}

std::string Trainer::provenance_json() {
  if (groups_.world().rank() != 0) return std::string();
  if (!provenance_) provenance_ = collect_provenance(config_, recipe_text_);
  provenance_->privacy = privacy_provenance();
  return provenance_->to_json();
}

void Trainer::check_finite_state(const std::vector<StatePiece>& pieces) {
  std::string offending;
  for (const StatePiece& piece : pieces) {
    if (piece.kind == "rng" || !at::isFloatingType(piece.data.scalar_type())) continue;
    if (piece.data.isfinite().all().item<bool>()) continue;
    offending = piece.tensor + " (" + piece.kind + ")";
    break;
  }
  at::Tensor any = at::full({1}, offending.empty() ? 0.0 : 1.0, at::kDouble);
  groups_.world().all_reduce(any, comm::ReduceOp::kMax)->wait();
  DST_CHECK(any.item<double>() == 0.0, CheckpointError,
            "refusing to save the checkpoint of step "
                << step_ << ": "
                << (offending.empty()
                        ? std::string("another rank's state")
                        : "rank " + std::to_string(groups_.world().rank()) + "'s " + offending)
                << " holds NaN or Inf; the previous checkpoint is unchanged");
}

void Trainer::wait_for_checkpoint() { checkpoint_writer_->wait(); }

std::string Trainer::load_checkpoint(const std::string& directory) {
  CheckpointReader reader(directory, encryption_key_);
  const CheckpointInfo& info = reader.info();
  check_same_model(info.model, config_.model, directory);
  torch::NoGradGuard no_grad;
  const auto parameters = model_->named_parameters(/*recurse=*/true);
  for (auto& engine : parallel_.engines) {
    for (ParameterStateSlice& slice : engine->state_slices()) {
      const torch::Tensor& local = parameters[slice.name];
      const std::vector<int64_t> expected = model_->full_shape(slice.name, local);
      const std::vector<int64_t> saved = reader.global_shape(slice.name);
      DST_CHECK(saved == expected, CheckpointError,
                directory << ": tensor '" << slice.name << "' has shape " << at::IntArrayRef(saved)
                          << " in the checkpoint, the model expects " << at::IntArrayRef(expected));
      const PieceLocation location = location_of(slice.name, local, slice.begin, slice.end);
      for (const auto& [kind, target] : optimizer_state(slice)) {
        DST_CHECK(reader.dtype(slice.name, kind) == "float32", CheckpointError,
                  directory << ": the " << kind << " of tensor '" << slice.name << "' is "
                            << reader.dtype(slice.name, kind) << ", expected float32");
        target.copy_(reader.read(slice.name, kind, location));
      }
    }
    engine->set_optimizer_steps(info.optimizer_steps);
    engine->state_restored();
  }
  for (const auto& item : parameters) {
    const std::string& name = item.key();
    torch::Tensor local = item.value();
    if (local.requires_grad()) continue;
    DST_CHECK(reader.has(name, "master"), CheckpointError,
              directory << ": the checkpoint has no values for frozen tensor '" << name << "'");
    const std::vector<int64_t> expected = model_->full_shape(name, local);
    DST_CHECK(reader.global_shape(name) == expected, CheckpointError,
              directory << ": tensor '" << name << "' has shape "
                        << at::IntArrayRef(reader.global_shape(name))
                        << " in the checkpoint, the model expects " << at::IntArrayRef(expected));
    local.copy_(reader.read(name, "master", location_of(name, local, 0, local.numel()))
                    .view(local.sizes()));
  }
  for (auto& [rng, generator] : random_generators()) {
    if (info.layout.world_size != groups_.world().size() || !reader.has(rng, "rng")) continue;
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(reader.read_full(rng, "rng"));
  }
  restore_privacy_history(info, directory);
  step_ = info.step;
  scaler_.set_state({info.loss_scale, info.loss_scaler_clean_steps, info.skipped_steps});
  logger_.info("resumed from " + directory + " at step " + std::to_string(step_) +
               " (saved on dp " + std::to_string(info.layout.dp) + " x tp " +
               std::to_string(info.layout.tp) + " x pp " + std::to_string(info.layout.pp) +
               ", ZeRO " + std::to_string(info.layout.zero_stage) + ")");
  return info.sampler_state;
}

}  // namespace dst

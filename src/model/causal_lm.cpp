#include "deepseek_train/model/causal_lm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>

#include "deepseek_train/core/deferred_tensor.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/kernels/fused_ops.h"
#include "deepseek_train/sharding/memory_plan.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"

namespace dst {

namespace F = torch::nn::functional;

// FNV-1a: a stable per-parameter seed component (std::hash is not stable across platforms).
uint64_t parameter_seed(uint64_t seed, const std::string& name) {
  uint64_t hash = 1469598103934665603ULL;
  for (unsigned char c : name) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return seed ^ hash;
}

CausalLM::CausalLM(ModelConfig config, comm::CommunicatorPtr tp_group)
    : config_(std::move(config)),
      tp_(tp_group && tp_group->size() > 1 ? std::move(tp_group) : nullptr) {}

void CausalLM::register_adapter_module(const std::string& name,
                                       std::shared_ptr<torch::nn::Module> module) {
  // "a.b.c": registered as "c" under the existing child "a.b" (or here when there is no dot).
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) {
    register_module(name, std::move(module));
    return;
  }
  const std::string parent = name.substr(0, dot);
  for (auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    if (item.key() == parent) {
      item.value()->register_module(name.substr(dot + 1), std::move(module));
      return;
    }
  }
  DST_THROW(InternalError, "register_adapter_module: the model has no module '" << parent << "'");
}

torch::Tensor CausalLM::forward(const torch::Tensor& input_ids) {
  const std::vector<LayerChunk>& local = chunks();
  DST_CHECK(local.size() == 1 && local[0].has_embedding && local[0].has_head, ConfigError,
            "forward(): this rank holds only part of the pipeline; use forward_chunk()");
  for (const auto& item : named_parameters(/*recurse=*/true))
    DST_CHECK(!is_deferred(item.value()), ConfigError,
              "forward(): parameter '" << item.key()
                                       << "' has no values yet: call initialize(seed) (or load "
                                          "weights) after building the model");
  torch::Tensor logits = forward_chunk(0, input_ids);
  if (!tp_) return logits;
  return gather_from_tp_region(logits, *tp_).narrow(-1, 0, config_.vocab_size);
}

void CausalLM::add_to_routing_bias(int64_t layer, const torch::Tensor&) {
  DST_THROW(ConfigError, "model family '" << config_.model_type << "' has no routing bias (layer "
                                          << layer << ")");
}

TpLayerTraffic CausalLM::tp_layer_traffic(int64_t) const {
  const int64_t hidden = config_.hidden_size;
  return {{hidden, hidden}, {hidden, hidden}};
}

torch::Tensor CausalLM::forward_incremental(const torch::Tensor&, KeyValueCache&, bool) {
  DST_THROW(ConfigError, "model family '" << config_.model_type
                                          << "' has no incremental decoding (key/value cache)");
}

void CausalLM::record_tp_splits() {
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    const auto* layer = dynamic_cast<const TensorParallelLayer*>(item.value().get());
    if (layer == nullptr) continue;
    const std::string weight = item.key() + ".weight";
    splits_[weight] = layer->weight_split();
    if (layer->unpadded_rows() > 0) unpadded_rows_[weight] = layer->unpadded_rows();
  }
}

TpSplit CausalLM::tp_split(const std::string& name) const {
  auto found = splits_.find(name);
  return found == splits_.end() ? TpSplit::kReplicated : found->second;
}

std::vector<int64_t> CausalLM::full_shape(const std::string& name,
                                          const torch::Tensor& local) const {
  std::vector<int64_t> shape = local.sizes().vec();
  switch (tp_split(name)) {
    case TpSplit::kReplicated:
      break;
    case TpSplit::kDim0:
      shape[0] *= tp_size();
      break;
    case TpSplit::kDim1:
      shape[1] *= tp_size();
      break;
  }
  auto padded = unpadded_rows_.find(name);
  if (padded != unpadded_rows_.end()) shape[0] = padded->second;
  return shape;
}

torch::Tensor CausalLM::gather_tp_parameter(const std::string& name,
                                            const torch::Tensor& local) const {
  const TpSplit split = tp_split(name);
  if (!tp_ || split == TpSplit::kReplicated) return local.detach().clone();
  const int64_t dim = split == TpSplit::kDim0 ? 0 : 1;
  torch::Tensor moved = local.detach().transpose(dim, -1);
  torch::Tensor full = all_gather_last_dim(moved, *tp_).transpose(dim, -1).contiguous();
  const std::vector<int64_t> shape = full_shape(name, local);
  return full.narrow(0, 0, shape[0]).contiguous();
}

void CausalLM::initialize(uint64_t seed) {
  for (auto& item : named_parameters(/*recurse=*/true))
    initialize_parameter(item.key(), item.value(), seed);
}

void CausalLM::initialize_parameter(const std::string& name, torch::Tensor& p, uint64_t seed) {
  torch::NoGradGuard no_grad;
  allocate_deferred(p);
  const TpSplit split = tp_split(name);
  if (p.dim() == 1 && split == TpSplit::kReplicated) {
    p.fill_(1.0);
    return;
  }
  // The full tensor from a generator of its own, so every layout draws the same values.
  auto generator = at::detail::createCPUGenerator(parameter_seed(seed, name));
  const std::vector<int64_t> shape = full_shape(name, p);
  torch::Tensor full = torch::empty(shape, torch::kFloat32);
  full.normal_(0.0, config_.initializer_range, generator);
  const int rank = tp_rank();
  switch (split) {
    case TpSplit::kReplicated:
      p.copy_(full);
      break;
    case TpSplit::kDim0: {
      const int64_t rows = p.size(0), begin = rank * rows;
      // Vocabulary padding rows (beyond the full tensor) stay zero.
      p.zero_();
      const int64_t available = std::max<int64_t>(0, std::min(rows, shape[0] - begin));
      if (available > 0) p.narrow(0, 0, available).copy_(full.narrow(0, begin, available));
      break;
    }
    case TpSplit::kDim1:
      p.copy_(full.narrow(1, rank * p.size(1), p.size(1)));
      break;
  }
}

int64_t CausalLM::activation_bytes(int64_t rows, int64_t seq_len, Precision compute, int64_t layers,
                                   bool with_logits, int64_t checkpointed_layers) const {
  return estimate_activation_bytes(config_, rows, seq_len, compute, tp_size(), layers, with_logits,
                                   checkpointed_layers, uses_fused_attention());
}

std::vector<int> CausalLM::first_unit_of_chunks() const {
  std::vector<int> first;
  int next = 0;
  for (const LayerChunk& chunk : chunks()) {
    first.push_back(next);
    next += units_of_chunk(chunk);
  }
  return first;
}

int CausalLM::num_units() const {
  int units = 0;
  for (const LayerChunk& chunk : chunks()) units += units_of_chunk(chunk);
  return units;
}

std::vector<NamedParameters> CausalLM::sharding_units() {
  std::vector<NamedParameters> units(static_cast<size_t>(num_units()));
  for (const auto& item : named_parameters(/*recurse=*/true))
    units[static_cast<size_t>(unit_of_parameter(item.key()))].emplace_back(item.key(),
                                                                           item.value());
  return units;
}

torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels,
                                bool fused) {
  const int64_t vocab = logits.size(-1);
  const bool fusable = logits.device().is_cpu() && (logits.scalar_type() == torch::kFloat32 ||
                                                    logits.scalar_type() == torch::kBFloat16);
  if (fused && fusable)
    return fused_cross_entropy_sum(logits.reshape({-1, vocab}), labels.reshape({-1}), kIgnoreIndex);
  return F::cross_entropy(
      logits.reshape({-1, vocab}).to(torch::kFloat32), labels.reshape({-1}),
      F::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex).reduction(torch::kSum));
}

int64_t count_target_tokens(const torch::Tensor& labels) {
  return labels.ne(kIgnoreIndex).sum().item<int64_t>();
}

bool is_no_decay_parameter(const std::string& name, const torch::Tensor& parameter) {
  return parameter.dim() < 2 || name.find("norm") != std::string::npos;
}

}  // namespace dst

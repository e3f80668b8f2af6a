#include "deepseek_train/model/llama.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>

#include "deepseek_train/core/error.h"
#include "deepseek_train/kernels/fused_ops.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"

namespace dst {

namespace F = torch::nn::functional;

namespace {

int group_size(const comm::CommunicatorPtr& group) { return group ? group->size() : 1; }

// Identity when there is no tp group.
torch::Tensor enter_tp(const torch::Tensor& x, const comm::CommunicatorPtr& group) {
  return group_size(group) > 1 ? copy_to_tp_region(x, *group) : x;
}
torch::Tensor leave_tp(const torch::Tensor& x, const comm::CommunicatorPtr& group) {
  return group_size(group) > 1 ? reduce_from_tp_region(x, *group) : x;
}

// The fused CPU ops (kernels/fused_ops.h) compute in fp32. fp32 activations go straight in; bf16
// ones are widened on the way in and narrowed on the way out, which still makes far fewer passes
// than the chains of bf16 ATen ops (each converting to fp32 and back) they replace.
bool fusable(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() &&
         (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16);
}
torch::Tensor widened(const torch::Tensor& t) { return t.to(torch::kFloat32); }

// A bias-free projection by `weight` computed in the activation's dtype (a no-op cast when the
// weight has it): the fused CPU linear when allowed and both are fp32 on the CPU.
torch::Tensor project(const torch::Tensor& weight, const torch::Tensor& x, bool fused) {
  if (fused && fused_ops_apply(x) && fused_ops_apply(weight)) return fused_linear(x, weight);
  return F::linear(x, weight.to(x.scalar_type()));
}
// The same plus the adapter attached to it under `name`, if any.
torch::Tensor project(const torch::nn::Linear& linear, const torch::Tensor& x,
                      const std::map<std::string, std::shared_ptr<LinearAdapter>>& adapters,
                      const char* name, bool fused) {
  torch::Tensor out = project(linear->weight, x, fused);
  if (adapters.empty()) return out;
  auto found = adapters.find(name);
  return found == adapters.end() || !found->second ? out : found->second->forward(x, out);
}

torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

int64_t local_count(int64_t total, int tp, const char* what) {
  DST_CHECK(
      total % tp == 0, ConfigError,
      "tensor parallel: " << what << " (" << total << ") is not divisible by parallel.tp=" << tp);
  return total / tp;
}

// Activation checkpointing of one decoder layer: forward without saving activations, recompute
// (with autograd) in backward. The layer travels as its address (autograd contexts hold IValues);
// the model owns it for longer than any graph.
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               DecoderLayerImpl* layer) {
    ctx->save_for_backward({x});
    ctx->saved_data["layer"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(layer));
    torch::NoGradGuard no_grad;
    return layer->forward(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(
        static_cast<intptr_t>(ctx->saved_data["layer"].toInt()));
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor out;
    {
      torch::AutoGradMode enable(true);
      out = layer->forward(x);
    }
    torch::autograd::backward({out}, {grads[0]});
    return {x.grad(), torch::Tensor()};
  }
};

}  // namespace

// FNV-1a: a stable per-parameter seed component (std::hash is not stable across platforms).
uint64_t parameter_seed(uint64_t seed, const std::string& name) {
  uint64_t hash = 1469598103934665603ULL;
  for (unsigned char c : name) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return seed ^ hash;
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (fused && fusable(x) && fusable(weight))
    return fused_rms_norm(widened(x), widened(weight), eps_).to(x.scalar_type());
  // As Hugging Face: normalise in fp32, cast back, then scale.
  auto x32 = x.to(torch::kFloat32);
  auto variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  auto normed = (x32 * torch::rsqrt(variance + eps_)).to(x.scalar_type());
  return weight.to(normed.scalar_type()) * normed;
}

torch::Tensor apply_rotary(const torch::Tensor& x, double theta, int64_t first_position) {
  const int64_t seq = x.size(-2);
  const int64_t dim = x.size(-1);
  auto freqs = rotary_angles(first_position, seq, dim, theta, x.device());  // [seq, dim/2]
  auto emb = torch::cat({freqs, freqs}, -1);                                // [seq, dim]
  auto cos = emb.cos().to(x.scalar_type());
  auto sin = emb.sin().to(x.scalar_type());
  auto halves = x.chunk(2, -1);
  auto rotated = torch::cat({-halves[1], halves[0]}, -1);
  return x * cos + rotated * sin;
}

AttentionImpl::AttentionImpl(const ModelConfig& c, comm::CommunicatorPtr tp_group)
    : tp_(std::move(tp_group)),
      heads_(local_count(c.num_attention_heads, group_size(tp_), "num_attention_heads")),
      kv_heads_(local_count(c.num_key_value_heads, group_size(tp_), "num_key_value_heads")),
      head_dim_(c.head_dim()),
      rope_theta_(c.rope_theta) {
  q_proj = register_module("q_proj", linear(c.hidden_size, heads_ * head_dim_));
  k_proj = register_module("k_proj", linear(c.hidden_size, kv_heads_ * head_dim_));
  v_proj = register_module("v_proj", linear(c.hidden_size, kv_heads_ * head_dim_));
  o_proj = register_module("o_proj", linear(heads_ * head_dim_, c.hidden_size));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& input) {
  const torch::Tensor x = enter_tp(input, tp_);
  const int64_t batch = x.size(0), seq = x.size(1);
  const int64_t prefix_length = prefix ? prefix->num_virtual_tokens() : 0;
  const bool fused_attention = fused && prefix_length == 0 && fusable(x);
  auto q = project(q_proj, x, adapters, "q_proj", fused);
  auto k = project(k_proj, x, adapters, "k_proj", fused);
  auto v = project(v_proj, x, adapters, "v_proj", fused);
  if (fused_attention && fusable(q) && fusable(k) && fusable(v)) {
    auto out =
        fused_causal_attention(widened(q), widened(k), widened(v), heads_, kv_heads_, rope_theta_)
            .to(q.scalar_type());
    return leave_tp(project(o_proj, out, adapters, "o_proj", fused), tp_);
  }
  q = q.view({batch, seq, heads_, head_dim_}).transpose(1, 2);
  k = k.view({batch, seq, kv_heads_, head_dim_}).transpose(1, 2);
  v = v.view({batch, seq, kv_heads_, head_dim_}).transpose(1, 2);
  q = apply_rotary(q, rope_theta_, prefix_length);
  k = apply_rotary(k, rope_theta_, prefix_length);
  if (prefix_length > 0) {
    // Learned keys/values before the sequence: [nvt, kv_heads, head_dim] -> [batch, kv, nvt, hd].
    auto [prefix_key, prefix_value] = prefix->key_value();
    auto expand = [&](const torch::Tensor& t) {
      return t.to(k.scalar_type())
          .permute({1, 0, 2})
          .unsqueeze(0)
          .expand({batch, kv_heads_, prefix_length, head_dim_});
    };
    k = torch::cat({expand(prefix_key), k}, 2);
    v = torch::cat({expand(prefix_value), v}, 2);
  }
  if (kv_heads_ != heads_) {  // grouped-query attention: each kv head serves heads/kv_heads heads
    k = k.repeat_interleave(heads_ / kv_heads_, /*dim=*/1);
    v = v.repeat_interleave(heads_ / kv_heads_, /*dim=*/1);
  }
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
  // Causal over the sequence; every prefix position is visible to every query.
  auto future = torch::ones({seq, prefix_length + seq},
                            torch::TensorOptions().dtype(torch::kBool).device(x.device()))
                    .triu(1 + prefix_length);
  if (prefix_length > 0 && !prefix->visible()) future.narrow(1, 0, prefix_length).fill_(true);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
  auto out = torch::matmul(probs, v).transpose(1, 2).reshape({batch, seq, heads_ * head_dim_});
  return leave_tp(project(o_proj, out, adapters, "o_proj", fused), tp_);
}

MlpImpl::MlpImpl(const ModelConfig& c, comm::CommunicatorPtr tp_group) : tp_(std::move(tp_group)) {
  const int64_t local = local_count(c.intermediate_size, group_size(tp_), "intermediate_size");
  gate_proj = register_module("gate_proj", linear(c.hidden_size, local));
  up_proj = register_module("up_proj", linear(c.hidden_size, local));
  down_proj = register_module("down_proj", linear(local, c.hidden_size));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& input) {
  const torch::Tensor x = enter_tp(input, tp_);
  const torch::Tensor gate = project(gate_proj, x, adapters, "gate_proj", fused);
  const torch::Tensor up = project(up_proj, x, adapters, "up_proj", fused);
  const torch::Tensor hidden = fused && fusable(gate) && fusable(up)
                                   ? fused_swiglu(widened(gate), widened(up)).to(gate.scalar_type())
                                   : F::silu(gate) * up;
  return leave_tp(project(down_proj, hidden, adapters, "down_proj", fused), tp_);
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, comm::CommunicatorPtr tp_group) {
  self_attn = register_module("self_attn", Attention(c, tp_group));
  mlp = register_module("mlp", Mlp(c, tp_group));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x) {
  auto h = x + self_attn(input_layernorm(x));
  return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& config, ModelShardSpec shard)
    : config_(config),
      tp_(group_size(shard.tp_group) > 1 ? shard.tp_group : nullptr),
      chunks_(std::move(shard.chunks)),
      checkpoint_every_(shard.checkpoint_every),
      fused_kernels_(shard.fused_kernels) {
  config_.validate();
  if (chunks_.empty()) chunks_.push_back(whole_model(config_.num_hidden_layers));
  vocab_ = dst::vocab_shard(config_.vocab_size, tp_size(), tp_ ? tp_->rank() : 0);
  bool has_embedding = false, has_head = false;
  for (const LayerChunk& chunk : chunks_) {
    DST_CHECK(
        chunk.begin >= 0 && chunk.begin <= chunk.end && chunk.end <= config_.num_hidden_layers,
        ConfigError,
        "model chunk [" << chunk.begin << ", " << chunk.end << ") is outside the "
                        << config_.num_hidden_layers << " layers");
    has_embedding = has_embedding || chunk.has_embedding;
    has_head = has_head || chunk.has_head;
  }
  // Tied embeddings with the head on another pipeline stage: the last stage keeps its own copy
  // of the embedding (same name, same initialisation) for the head; the trainer keeps the two
  // copies equal by summing their gradients across the stages.
  auto stack = register_module("model", std::make_shared<torch::nn::Module>());
  if (has_embedding || (config_.tie_word_embeddings && has_head)) {
    embed_tokens = stack->register_module("embed_tokens",
                                          torch::nn::Embedding(vocab_.size(), config_.hidden_size));
  }
  auto layer_holder = stack->register_module("layers", std::make_shared<torch::nn::Module>());
  for (const LayerChunk& chunk : chunks_) {
    for (int64_t i = chunk.begin; i < chunk.end; ++i) {
      DecoderLayer layer =
          layer_holder->register_module(std::to_string(i), DecoderLayer(config_, tp_));
      layer->input_layernorm->fused = fused_kernels_;
      layer->post_attention_layernorm->fused = fused_kernels_;
      layer->self_attn->fused = fused_kernels_;
      layer->mlp->fused = fused_kernels_;
      layers.emplace(i, layer);
    }
  }
  if (has_head) {
    norm = stack->register_module("norm", RMSNorm(config_.hidden_size, config_.rms_norm_eps));
    norm->fused = fused_kernels_;
    if (!config_.tie_word_embeddings)
      lm_head = register_module("lm_head", linear(config_.hidden_size, vocab_.size()));
  }
  for (const LayerChunk& chunk : chunks_) {
    first_unit_of_chunk_.push_back(num_units_);
    num_units_ += units_of_chunk(chunk);
  }
}

bool LlamaModelImpl::uses_fused_attention() const {
  if (!fused_kernels_) return false;
  for (const auto& [index, layer] : layers) {
    if (layer->self_attn->prefix) return false;  // prefix tuning keeps the ATen attention
    if (!layer->self_attn->q_proj->weight.device().is_cpu()) return false;  // CPU kernels only
  }
  return true;
}

bool LlamaModelImpl::holds_embedding_copy(const LayerChunk& chunk) const {
  return config_.tie_word_embeddings && chunk.has_head && !chunk.has_embedding;
}

int LlamaModelImpl::units_of_chunk(const LayerChunk& chunk) const {
  return static_cast<int>(chunk.end - chunk.begin) + (chunk.has_embedding ? 1 : 0) +
         (holds_embedding_copy(chunk) ? 1 : 0) + (chunk.has_head ? 1 : 0);
}

template <typename Fn>
torch::Tensor LlamaModelImpl::run_unit(int unit, Fn&& forward) {
  if (unit_hooks_ == nullptr) return forward();
  unit_hooks_->before_forward(unit);
  return unit_hooks_->after_forward(unit, forward());
}

torch::Tensor LlamaModelImpl::run_layer(int64_t index, const torch::Tensor& h) {
  DecoderLayer& layer = layers.at(index);
  const bool checkpoint = checkpoint_every_ > 0 && index % checkpoint_every_ == 0 &&
                          torch::GradMode::is_enabled() && h.requires_grad();
  if (!checkpoint) return layer->forward(h);
  return CheckpointedLayer::apply(h, layer.get());
}

torch::Tensor LlamaModelImpl::head_logits(const torch::Tensor& h) {
  auto normed = enter_tp(norm(h), tp_);
  return project(lm_head ? lm_head->weight : embed_tokens->weight, normed, fused_kernels_);
}

torch::Tensor LlamaModelImpl::forward_chunk(int chunk_index, const torch::Tensor& input) {
  DST_CHECK(chunk_index >= 0 && chunk_index < num_chunks(), ConfigError,
            "forward_chunk: chunk " << chunk_index << " of " << num_chunks());
  const LayerChunk& chunk = chunks_[chunk_index];
  int unit = first_unit_of_chunk_[chunk_index];
  if (holds_embedding_copy(chunk)) ++unit;  // used by the head, no forward of its own
  torch::Tensor h = input;
  if (chunk.has_embedding) {
    DST_CHECK(input.dim() == 2, ConfigError,
              "model input must be [batch, seq], got " << input.dim() << " dimensions");
    DST_CHECK(input.size(1) <= config_.max_position_embeddings, ConfigError,
              "sequence length " << input.size(1) << " exceeds max_position_embeddings "
                                 << config_.max_position_embeddings);
    h = run_unit(unit++, [&] {
      torch::Tensor embedded =
          tp_ ? vocab_parallel_embedding(input, embed_tokens->weight, vocab_, *tp_)
              : embed_tokens(input);
      return compute_dtype_ ? embedded.to(*compute_dtype_) : embedded;
    });
  }
  for (int64_t i = chunk.begin; i < chunk.end; ++i) {
    const torch::Tensor layer_input = h;
    h = run_unit(unit++, [&] { return run_layer(i, layer_input); });
  }
  if (chunk.has_head) {
    const torch::Tensor head_input = h;
    h = run_unit(unit++, [&] { return head_logits(head_input); });
  }
  return h;
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& input_ids) {
  DST_CHECK(num_chunks() == 1 && chunks_[0].has_embedding && chunks_[0].has_head, ConfigError,
            "forward(): this rank holds only part of the pipeline; use forward_chunk()");
  torch::Tensor logits = forward_chunk(0, input_ids);
  if (!tp_) return logits;
  return gather_from_tp_region(logits, *tp_).narrow(-1, 0, config_.vocab_size);
}

torch::Tensor LlamaModelImpl::loss_sum(const torch::Tensor& logits,
                                       const torch::Tensor& labels) const {
  if (!tp_) return cross_entropy_sum(logits, labels, fused_kernels_);
  return vocab_parallel_cross_entropy_sum(logits, labels, vocab_, *tp_, kIgnoreIndex);
}

TpSplit LlamaModelImpl::tp_split(const std::string& name) const {
  if (!extra_splits_.empty()) {
    auto found = extra_splits_.find(name);
    if (found != extra_splits_.end()) return found->second;
  }
  auto ends_with = [&](const char* suffix) {
    const std::string s(suffix);
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with("embed_tokens.weight") || ends_with("lm_head.weight")) return TpSplit::kDim0;
  for (const char* column :
       {"q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight", "up_proj.weight"})
    if (ends_with(column)) return TpSplit::kDim0;
  if (ends_with("o_proj.weight") || ends_with("down_proj.weight")) return TpSplit::kDim1;
  return TpSplit::kReplicated;
}

std::vector<int64_t> LlamaModelImpl::full_shape(const std::string& name,
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
  const bool vocab_rows =
      name.find("embed_tokens") != std::string::npos || name.find("lm_head") != std::string::npos;
  if (vocab_rows) shape[0] = config_.vocab_size;
  return shape;
}

torch::Tensor LlamaModelImpl::gather_tp_parameter(const std::string& name,
                                                  const torch::Tensor& local) const {
  const TpSplit split = tp_split(name);
  if (!tp_ || split == TpSplit::kReplicated) return local.detach().clone();
  const int64_t dim = split == TpSplit::kDim0 ? 0 : 1;
  torch::Tensor moved = local.detach().transpose(dim, -1);
  torch::Tensor full = all_gather_last_dim(moved, *tp_).transpose(dim, -1).contiguous();
  const std::vector<int64_t> shape = full_shape(name, local);
  return full.narrow(0, 0, shape[0]).contiguous();
}

void LlamaModelImpl::initialize(uint64_t seed) {
  torch::NoGradGuard no_grad;
  const int tp_rank = tp_ ? tp_->rank() : 0;
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    if (p.dim() == 1 && tp_split(name) == TpSplit::kReplicated) {
      p.fill_(1.0);
      continue;
    }
    // The full tensor from a generator of its own, so every layout draws the same values.
    auto generator = at::detail::createCPUGenerator(parameter_seed(seed, name));
    const std::vector<int64_t> shape = full_shape(name, p);
    torch::Tensor full = torch::empty(shape, torch::kFloat32);
    full.normal_(0.0, config_.initializer_range, generator);
    switch (tp_split(name)) {
      case TpSplit::kReplicated:
        p.copy_(full);
        break;
      case TpSplit::kDim0: {
        const int64_t rows = p.size(0), begin = tp_rank * rows;
        // Vocabulary padding rows (beyond the full tensor) stay zero.
        p.zero_();
        const int64_t available = std::max<int64_t>(0, std::min(rows, shape[0] - begin));
        if (available > 0) p.narrow(0, 0, available).copy_(full.narrow(0, begin, available));
        break;
      }
      case TpSplit::kDim1:
        p.copy_(full.narrow(1, tp_rank * p.size(1), p.size(1)));
        break;
    }
  }
}

std::vector<ProjectionSite> LlamaModelImpl::projection_sites() {
  std::vector<ProjectionSite> sites;
  const int tp = tp_size();
  auto add = [&](const std::string& prefix, const char* name, torch::nn::Linear& linear,
                 TpSplit split, std::map<std::string, std::shared_ptr<LinearAdapter>>& slots) {
    ProjectionSite site;
    site.name = prefix + name;
    site.linear = linear;
    site.split = split;
    site.in_features = linear->weight.size(1) * (split == TpSplit::kDim1 ? tp : 1);
    site.out_features = linear->weight.size(0) * (split == TpSplit::kDim0 ? tp : 1);
    site.adapter = &slots[name];
    sites.push_back(std::move(site));
  };
  for (auto& [index, layer] : layers) {
    const std::string prefix = "model.layers." + std::to_string(index) + ".";
    Attention& attn = layer->self_attn;
    add(prefix + "self_attn.", "q_proj", attn->q_proj, TpSplit::kDim0, attn->adapters);
    add(prefix + "self_attn.", "k_proj", attn->k_proj, TpSplit::kDim0, attn->adapters);
    add(prefix + "self_attn.", "v_proj", attn->v_proj, TpSplit::kDim0, attn->adapters);
    add(prefix + "self_attn.", "o_proj", attn->o_proj, TpSplit::kDim1, attn->adapters);
    Mlp& mlp = layer->mlp;
    add(prefix + "mlp.", "gate_proj", mlp->gate_proj, TpSplit::kDim0, mlp->adapters);
    add(prefix + "mlp.", "up_proj", mlp->up_proj, TpSplit::kDim0, mlp->adapters);
    add(prefix + "mlp.", "down_proj", mlp->down_proj, TpSplit::kDim1, mlp->adapters);
  }
  return sites;
}

std::map<int64_t, Attention> LlamaModelImpl::attention_layers() {
  std::map<int64_t, Attention> result;
  for (auto& [index, layer] : layers) result.emplace(index, layer->self_attn);
  return result;
}

int LlamaModelImpl::unit_of_parameter(const std::string& name) const {
  // Prefix tuning's shared encoder (single-chunk models only) computes with the embedding.
  if (name.rfind("model.prefix_encoder.", 0) == 0) return first_unit_of_chunk_.front();
  for (int c = 0; c < num_chunks(); ++c) {
    const LayerChunk& chunk = chunks_[c];
    int unit = first_unit_of_chunk_[c];
    if (chunk.has_embedding || holds_embedding_copy(chunk)) {
      if (name.rfind("model.embed_tokens.", 0) == 0) return unit;
      ++unit;
    }
    const std::string prefix = "model.layers.";
    if (name.rfind(prefix, 0) == 0) {
      const int64_t index = std::stoll(name.substr(prefix.size()));
      if (index >= chunk.begin && index < chunk.end)
        return unit + static_cast<int>(index - chunk.begin);
    }
    unit += static_cast<int>(chunk.end - chunk.begin);
    if (chunk.has_head && (name.rfind("model.norm.", 0) == 0 || name.rfind("lm_head.", 0) == 0))
      return unit;
  }
  DST_THROW(InternalError, "parameter '" << name << "' belongs to no unit of this rank");
}

std::vector<std::vector<std::pair<std::string, torch::Tensor>>> LlamaModelImpl::sharding_units() {
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> units(num_units_);
  for (const auto& item : named_parameters(/*recurse=*/true))
    units[unit_of_parameter(item.key())].emplace_back(item.key(), item.value());
  return units;
}

torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels,
                                bool fused) {
  const int64_t vocab = logits.size(-1);
  if (fused && fusable(logits))
    return fused_cross_entropy_sum(widened(logits.reshape({-1, vocab})), labels.reshape({-1}),
                                   kIgnoreIndex);
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

#include "deepseek_train/model/llama.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>

#include "deepseek_train/core/error.h"
#include "deepseek_train/kernels/fused_ops.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"
#include "deepseek_train/tensor_parallel/parallel_layers.h"

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

// The fused CPU ops (kernels/fused_ops.h) take fp32 or bf16 tensors and compute in fp32; bf16
// stays bf16 in what they keep for the backward, and the ops make far fewer passes than the
// chains of bf16 ATen ops (each converting to fp32 and back) they replace.
bool fusable(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() &&
         (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16);
}

// A bias-free projection by `weight` computed in the activation's dtype (a no-op cast when the
// weight has it): the fused CPU linear when allowed and both are fp32 on the CPU.
torch::Tensor project(const torch::Tensor& weight, const torch::Tensor& x, bool fused) {
  if (fused && fused_linear_applies(x, weight)) return fused_linear(x, weight);
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

// Llama's projections are the tensor-parallel layers, held as plain Linear modules (their
// weights feed the fused kernels directly; the model places the tp region boundaries itself).
// `what` names the split size in the divisibility error.
torch::nn::Linear column_parallel(int64_t in, int64_t out, const comm::CommunicatorPtr& tp,
                                  const char* what) {
  return torch::nn::Linear(std::shared_ptr<torch::nn::LinearImpl>(
      std::make_shared<ColumnParallelLinearImpl>(in, out, tp, what)));
}
torch::nn::Linear row_parallel(int64_t in, int64_t out, const comm::CommunicatorPtr& tp,
                               const char* what) {
  return torch::nn::Linear(std::shared_ptr<torch::nn::LinearImpl>(
      std::make_shared<RowParallelLinearImpl>(in, out, tp, what)));
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

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (fused && fusable(x) && fusable(weight)) return fused_rms_norm(x, weight, eps_);
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
      heads_(tp_local_count(c.num_attention_heads, tp_, "num_attention_heads")),
      kv_heads_(tp_local_count(c.num_key_value_heads, tp_, "num_key_value_heads")),
      head_dim_(c.head_dim()),
      rope_theta_(c.rope_theta) {
  const int64_t q_dim = c.num_attention_heads * head_dim_;
  const int64_t kv_dim = c.num_key_value_heads * head_dim_;
  const char* heads = "num_attention_heads * head_dim";
  const char* kv_heads = "num_key_value_heads * head_dim";
  q_proj = register_module("q_proj", column_parallel(c.hidden_size, q_dim, tp_, heads));
  k_proj = register_module("k_proj", column_parallel(c.hidden_size, kv_dim, tp_, kv_heads));
  v_proj = register_module("v_proj", column_parallel(c.hidden_size, kv_dim, tp_, kv_heads));
  o_proj = register_module("o_proj", row_parallel(q_dim, c.hidden_size, tp_, heads));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& input) {
  LayerKeyValueCache fresh;
  return run(input, fresh, /*may_fuse=*/true);
}

torch::Tensor AttentionImpl::forward_cached(const torch::Tensor& input, LayerKeyValueCache& cache) {
  return run(input, cache, /*may_fuse=*/false);
}

torch::Tensor AttentionImpl::run(const torch::Tensor& input, LayerKeyValueCache& cache,
                                 bool may_fuse) {
  const torch::Tensor x = enter_tp(input, tp_);
  const int64_t batch = x.size(0), seq = x.size(1);
  const int64_t prefix_length = prefix ? prefix->num_virtual_tokens() : 0;
  const bool fused_attention = may_fuse && fused && prefix_length == 0 && fusable(x);
  auto q = project(q_proj, x, adapters, "q_proj", fused);
  auto k = project(k_proj, x, adapters, "k_proj", fused);
  auto v = project(v_proj, x, adapters, "v_proj", fused);
  if (fused_attention && fusable(q) && fusable(k) && fusable(v)) {
    auto out = fused_causal_attention(q, k, v, heads_, kv_heads_, rope_theta_);
    return leave_tp(project(o_proj, out, adapters, "o_proj", fused), tp_);
  }
  q = q.view({batch, seq, heads_, head_dim_}).transpose(1, 2);
  k = k.view({batch, seq, kv_heads_, head_dim_}).transpose(1, 2);
  v = v.view({batch, seq, kv_heads_, head_dim_}).transpose(1, 2);
  return leave_tp(project(o_proj, attend(q, k, v, cache), adapters, "o_proj", fused), tp_);
}

torch::Tensor AttentionImpl::attend(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                    LayerKeyValueCache& cache) {
  const int64_t batch = q.size(0), seq = q.size(2);
  const int64_t prefix_length = prefix ? prefix->num_virtual_tokens() : 0;
  if (!cache.key.defined() && prefix_length > 0) {
    // Learned keys/values before the sequence: [nvt, kv_heads, head_dim] -> [batch, kv, nvt, hd].
    auto [prefix_key, prefix_value] = prefix->key_value();
    auto expand = [&](const torch::Tensor& t) {
      return t.to(k.scalar_type())
          .permute({1, 0, 2})
          .unsqueeze(0)
          .expand({batch, kv_heads_, prefix_length, head_dim_});
    };
    cache.key = expand(prefix_key);
    cache.value = expand(prefix_value);
  }
  const int64_t past = cache.length();  // the prefix and earlier tokens: positions before q's
  q = apply_rotary(q, rope_theta_, past);
  k = apply_rotary(k, rope_theta_, past);
  if (cache.key.defined()) {
    k = torch::cat({cache.key, k}, 2);
    v = torch::cat({cache.value, v}, 2);
  }
  cache.key = k;
  cache.value = v;
  if (kv_heads_ != heads_) {  // grouped-query attention: each kv head serves heads/kv_heads heads
    k = k.repeat_interleave(heads_ / kv_heads_, /*dim=*/1);
    v = v.repeat_interleave(heads_ / kv_heads_, /*dim=*/1);
  }
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
  // Causal: query i sits at position past + i; every prefix position is visible to every query.
  auto future =
      torch::ones({seq, past + seq}, torch::TensorOptions().dtype(torch::kBool).device(q.device()))
          .triu(1 + past);
  if (prefix_length > 0 && !prefix->visible()) future.narrow(1, 0, prefix_length).fill_(true);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
  return torch::matmul(probs, v).transpose(1, 2).reshape({batch, seq, heads_ * head_dim_});
}

MlpImpl::MlpImpl(const ModelConfig& c, comm::CommunicatorPtr tp_group) : tp_(std::move(tp_group)) {
  const int64_t hidden = c.hidden_size, intermediate = c.intermediate_size;
  const char* what = "intermediate_size";
  gate_proj = register_module("gate_proj", column_parallel(hidden, intermediate, tp_, what));
  up_proj = register_module("up_proj", column_parallel(hidden, intermediate, tp_, what));
  down_proj = register_module("down_proj", row_parallel(intermediate, hidden, tp_, what));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& input) {
  const torch::Tensor x = enter_tp(input, tp_);
  const torch::Tensor gate = project(gate_proj, x, adapters, "gate_proj", fused);
  const torch::Tensor up = project(up_proj, x, adapters, "up_proj", fused);
  const torch::Tensor hidden =
      fused && fusable(gate) && fusable(up) ? fused_swiglu(gate, up) : F::silu(gate) * up;
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

torch::Tensor DecoderLayerImpl::forward_cached(const torch::Tensor& x, LayerKeyValueCache& cache) {
  auto h = x + self_attn->forward_cached(input_layernorm(x), cache);
  return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& config, ModelShardSpec shard)
    : CausalLM(config, shard.tp_group),
      chunks_(std::move(shard.chunks)),
      checkpoint_every_(shard.checkpoint_every),
      fused_kernels_(shard.fused_kernels) {
  config_.validate();
  if (chunks_.empty()) chunks_.push_back(whole_model(config_.num_hidden_layers));
  vocab_ = dst::vocab_shard(config_.vocab_size, tp_size(), tp_rank());
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
    embed_tokens = stack->register_module(
        "embed_tokens", torch::nn::Embedding(std::shared_ptr<torch::nn::EmbeddingImpl>(
                            std::make_shared<VocabParallelEmbeddingImpl>(
                                config_.vocab_size, config_.hidden_size, tp_group()))));
  }
  auto layer_holder = stack->register_module("layers", std::make_shared<torch::nn::Module>());
  for (const LayerChunk& chunk : chunks_) {
    for (int64_t i = chunk.begin; i < chunk.end; ++i) {
      DecoderLayer layer =
          layer_holder->register_module(std::to_string(i), DecoderLayer(config_, tp_group()));
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
      lm_head = register_module(
          "lm_head", torch::nn::Linear(std::shared_ptr<torch::nn::LinearImpl>(
                         ColumnParallelLinearImpl::vocab_head(config_.hidden_size,
                                                              config_.vocab_size, tp_group()))));
  }
  first_unit_of_chunk_ = first_unit_of_chunks();
  record_tp_splits();
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

torch::Tensor LlamaModelImpl::run_layer(int64_t index, const torch::Tensor& h) {
  DecoderLayer& layer = layers.at(index);
  const bool checkpoint = checkpoint_every_ > 0 && index % checkpoint_every_ == 0 &&
                          torch::GradMode::is_enabled() && h.requires_grad();
  if (!checkpoint) return layer->forward(h);
  return CheckpointedLayer::apply(h, layer.get());
}

torch::Tensor LlamaModelImpl::head_logits(const torch::Tensor& h) {
  auto normed = enter_tp(norm(h), tp_group());
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
          tp_group() ? vocab_parallel_embedding(input, embed_tokens->weight, vocab_, *tp_group())
                     : embed_tokens(input);
      return compute_dtype() ? embedded.to(*compute_dtype()) : embedded;
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

torch::Tensor LlamaModelImpl::forward_incremental(const torch::Tensor& input_ids,
                                                  KeyValueCache& cache, bool last_only) {
  DST_CHECK(
      tp_size() == 1 && chunks_.size() == 1 && chunks_[0].has_embedding && chunks_[0].has_head,
      ConfigError, "incremental decoding needs the whole model on one rank (no tp or pp)");
  DST_CHECK(input_ids.dim() == 2, ConfigError,
            "model input must be [batch, seq], got " << input_ids.dim() << " dimensions");
  const int64_t end = cache.tokens + input_ids.size(1);
  DST_CHECK(end <= config_.max_position_embeddings, ConfigError,
            "sequence length " << end << " exceeds max_position_embeddings "
                               << config_.max_position_embeddings);
  torch::Tensor h = embed_tokens(input_ids);
  if (compute_dtype()) h = h.to(*compute_dtype());
  for (auto& [index, layer] : layers) h = layer->forward_cached(h, cache.layers[index]);
  cache.tokens = end;
  if (last_only) h = h.narrow(1, h.size(1) - 1, 1);  // a long prompt's logits would be large
  return head_logits(h);
}

torch::Tensor LlamaModelImpl::loss_sum(const torch::Tensor& logits,
                                       const torch::Tensor& labels) const {
  if (!tp_group()) return cross_entropy_sum(logits, labels, fused_kernels_);
  return vocab_parallel_cross_entropy_sum(logits, labels, vocab_, *tp_group(), kIgnoreIndex);
}

std::vector<ProjectionSite> LlamaModelImpl::projection_sites() {
  std::vector<ProjectionSite> sites;
  const int tp = tp_size();
  auto add = [&](const std::string& prefix, const char* name, torch::nn::Linear& linear,
                 std::map<std::string, std::shared_ptr<LinearAdapter>>& slots) {
    ProjectionSite site;
    site.name = prefix + name;
    site.linear = linear;
    const TpSplit split = tp_split(site.name + ".weight");
    site.split = split;
    site.in_features = linear->weight.size(1) * (split == TpSplit::kDim1 ? tp : 1);
    site.out_features = linear->weight.size(0) * (split == TpSplit::kDim0 ? tp : 1);
    site.adapter = &slots[name];
    sites.push_back(std::move(site));
  };
  for (auto& [index, layer] : layers) {
    const std::string prefix = "model.layers." + std::to_string(index) + ".";
    Attention& attn = layer->self_attn;
    add(prefix + "self_attn.", "q_proj", attn->q_proj, attn->adapters);
    add(prefix + "self_attn.", "k_proj", attn->k_proj, attn->adapters);
    add(prefix + "self_attn.", "v_proj", attn->v_proj, attn->adapters);
    add(prefix + "self_attn.", "o_proj", attn->o_proj, attn->adapters);
    Mlp& mlp = layer->mlp;
    add(prefix + "mlp.", "gate_proj", mlp->gate_proj, mlp->adapters);
    add(prefix + "mlp.", "up_proj", mlp->up_proj, mlp->adapters);
    add(prefix + "mlp.", "down_proj", mlp->down_proj, mlp->adapters);
  }
  return sites;
}

std::vector<KeyValuePrefixSite> LlamaModelImpl::key_value_prefix_sites() {
  std::vector<KeyValuePrefixSite> sites;
  for (auto& [index, layer] : layers) {
    KeyValuePrefixSite site;
    site.layer = index;
    site.kv_heads = config_.num_key_value_heads;
    site.local_kv_heads = layer->self_attn->local_kv_heads();
    site.head_dim = config_.head_dim();
    site.prefix = &layer->self_attn->prefix;
    sites.push_back(site);
  }
  return sites;
}

bool LlamaModelImpl::is_embedding(const std::string& name) const {
  return name.rfind("model.embed_tokens.", 0) == 0;
}

int LlamaModelImpl::unit_of_parameter(const std::string& name) const {
  // Prefix tuning's shared encoder (single-chunk models only) computes with the embedding.
  if (name.rfind("model.prefix_encoder.", 0) == 0) return first_unit_of_chunk_.front();
  for (int c = 0; c < num_chunks(); ++c) {
    const LayerChunk& chunk = chunks_[c];
    int unit = first_unit_of_chunk_[c];
    if (chunk.has_embedding || holds_embedding_copy(chunk)) {
      if (is_embedding(name)) return unit;
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

}  // namespace dst

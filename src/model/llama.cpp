#include "deepseek_train/model/llama.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>

#include "deepseek_train/core/error.h"
#include "deepseek_train/kernels/fused_ops.h"
#include "deepseek_train/privacy/per_example_tap.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"
#include "deepseek_train/tensor_parallel/parallel_layers.h"
#include "model_ops.h"

namespace dst {

namespace F = torch::nn::functional;
using model_ops::column_parallel;
using model_ops::enter_tp;
using model_ops::fusable;
using model_ops::leave_tp;
using model_ops::project;
using model_ops::row_parallel;

namespace {

// x [..., seq, dim] rotated by angles [..., seq, dim/2] (broadcast over the heads).
torch::Tensor rotate_half_pairs(const torch::Tensor& x, const torch::Tensor& freqs) {
  auto emb = torch::cat({freqs, freqs}, -1);
  auto cos = emb.cos().to(x.scalar_type());
  auto sin = emb.sin().to(x.scalar_type());
  auto halves = x.chunk(2, -1);
  auto rotated = torch::cat({-halves[1], halves[0]}, -1);
  return x * cos + rotated * sin;
}

}  // namespace

torch::Tensor apply_rotary(const torch::Tensor& x, double theta, int64_t first_position) {
  return rotate_half_pairs(x, rotary_angles(first_position, x.size(-2), x.size(-1), theta,
                                            x.device()));  // angles [seq, dim/2]
}

torch::Tensor apply_rotary_at(const torch::Tensor& x, double theta,
                              const torch::Tensor& positions) {
  // [batch, seq, dim/2] -> [batch, 1, seq, dim/2]: one row's positions for all of its heads.
  return rotate_half_pairs(x, rotary_angles_at(positions, x.size(-1), theta).unsqueeze(1));
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
      torch::Tensor expanded = t.to(k.scalar_type())
                                   .permute({1, 0, 2})
                                   .unsqueeze(0)
                                   .expand({batch, kv_heads_, prefix_length, head_dim_});
      if (PerExampleGradientTap* tap = active_per_example_tap()) tap->broadcast(t, expanded);
      return expanded;
    };
    cache.key = expand(prefix_key);
    cache.value = expand(prefix_value);
  }
  const int64_t past = cache.length();  // the prefix and earlier tokens: positions before q's
  const bool padded = cache.left_padding.defined();
  DST_CHECK(!padded || prefix_length == 0, ConfigError,
            "generating several prompts at once is not supported with prefix tuning (give "
            "--batch-size 1)");
  if (padded) {  // left-padded rows: each row's positions from its first token
    const torch::Tensor positions = padded_positions(cache.left_padding, past, seq);
    q = apply_rotary_at(q, rope_theta_, positions);
    k = apply_rotary_at(k, rope_theta_, positions);
  } else {
    q = apply_rotary(q, rope_theta_, past);
    k = apply_rotary(k, rope_theta_, past);
  }
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
  // Causal: query i sits at position past + i; every prefix position is visible to every query.
  auto future = padded ? padded_attention_mask(cache.left_padding, past, seq)
                       : torch::ones({seq, past + seq},
                                     torch::TensorOptions().dtype(torch::kBool).device(q.device()))
                             .triu(1 + past);
  if (prefix_length > 0 && !prefix->visible()) future.narrow(1, 0, prefix_length).fill_(true);
  if (!q.device().is_cpu()) {
    // GPUs: ATen's fused attention (flash, cuDNN or memory-efficient kernels); the mask says
    // where to attend.
    const torch::Tensor out =
        past == 0 && !padded
            ? at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true)
            : at::scaled_dot_product_attention(q, k, v, future.logical_not(), 0.0, false);
    return out.transpose(1, 2).reshape({batch, seq, heads_ * head_dim_});
  }
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
  return torch::matmul(probs, v).transpose(1, 2).reshape({batch, seq, heads_ * head_dim_});
}

MlpImpl::MlpImpl(int64_t hidden, int64_t intermediate, comm::CommunicatorPtr tp_group)
    : tp_(std::move(tp_group)) {
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
  mlp = register_module("mlp", Mlp(c.hidden_size, c.intermediate_size, tp_group));
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
    : DecoderLMImpl(config, std::move(shard)) {
  build_stack([this](int64_t index) {
    DecoderLayer layer(config_, tp_group());
    layer->input_layernorm->fused = fused_kernels();
    layer->post_attention_layernorm->fused = fused_kernels();
    layer->self_attn->fused = fused_kernels();
    layer->mlp->fused = fused_kernels();
    layers.emplace(index, layer);
    return layer.ptr();
  });
}

bool LlamaModelImpl::uses_fused_attention() const {
  if (!fused_kernels()) return false;
  for (const auto& [index, layer] : layers) {
    if (layer->self_attn->prefix) return false;  // prefix tuning keeps the ATen attention
    if (!layer->self_attn->q_proj->weight.device().is_cpu()) return false;  // CPU kernels only
  }
  return true;
}

std::vector<ProjectionSite> LlamaModelImpl::projection_sites() {
  std::vector<ProjectionSite> sites;
  for (auto& [index, layer] : layers) {
    const std::string prefix = "model.layers." + std::to_string(index) + ".";
    Attention& attn = layer->self_attn;
    for (auto [name, linear] : {std::pair{"q_proj", &attn->q_proj},
                                {"k_proj", &attn->k_proj},
                                {"v_proj", &attn->v_proj},
                                {"o_proj", &attn->o_proj}})
      sites.push_back(model_ops::projection_site(*this, prefix + "self_attn." + name, *linear,
                                                 attn->adapters, name));
    Mlp& mlp = layer->mlp;
    for (auto [name, linear] : {std::pair{"gate_proj", &mlp->gate_proj},
                                {"up_proj", &mlp->up_proj},
                                {"down_proj", &mlp->down_proj}})
      sites.push_back(
          model_ops::projection_site(*this, prefix + "mlp." + name, *linear, mlp->adapters, name));
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

}  // namespace dst

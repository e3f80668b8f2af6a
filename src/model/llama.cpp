#include "deepseek_train/model/llama.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>

#include "deepseek_train/core/error.h"

namespace dst {

namespace F = torch::nn::functional;

namespace {

// A bias-free projection computed in the activation's dtype (a no-op cast when the weight has it).
torch::Tensor project(const torch::nn::Linear& linear, const torch::Tensor& x) {
  return F::linear(x, linear->weight.to(x.scalar_type()));
}

}  // namespace

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  // As Hugging Face: normalise in fp32, cast back, then scale.
  auto x32 = x.to(torch::kFloat32);
  auto variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  auto normed = (x32 * torch::rsqrt(variance + eps_)).to(x.scalar_type());
  return weight.to(normed.scalar_type()) * normed;
}

torch::Tensor apply_rotary(const torch::Tensor& x, double theta) {
  const int64_t seq = x.size(-2);
  const int64_t dim = x.size(-1);
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(x.device());
  auto inv_freq =
      1.0 / torch::pow(theta, torch::arange(0, dim, 2, opts) / static_cast<double>(dim));
  auto positions = torch::arange(seq, opts);
  auto freqs = torch::outer(positions, inv_freq);  // [seq, dim/2]
  auto emb = torch::cat({freqs, freqs}, -1);       // [seq, dim]
  auto cos = emb.cos().to(x.scalar_type());
  auto sin = emb.sin().to(x.scalar_type());
  auto halves = x.chunk(2, -1);
  auto rotated = torch::cat({-halves[1], halves[0]}, -1);
  return x * cos + rotated * sin;
}

AttentionImpl::AttentionImpl(const ModelConfig& c)
    : heads_(c.num_attention_heads),
      kv_heads_(c.num_key_value_heads),
      head_dim_(c.head_dim()),
      rope_theta_(c.rope_theta) {
  auto linear = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  q_proj = register_module("q_proj", linear(c.hidden_size, heads_ * head_dim_));
  k_proj = register_module("k_proj", linear(c.hidden_size, kv_heads_ * head_dim_));
  v_proj = register_module("v_proj", linear(c.hidden_size, kv_heads_ * head_dim_));
  o_proj = register_module("o_proj", linear(heads_ * head_dim_, c.hidden_size));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x) {
  const int64_t batch = x.size(0), seq = x.size(1);
  auto q = project(q_proj, x).view({batch, seq, heads_, head_dim_}).transpose(1, 2);
  auto k = project(k_proj, x).view({batch, seq, kv_heads_, head_dim_}).transpose(1, 2);
  auto v = project(v_proj, x).view({batch, seq, kv_heads_, head_dim_}).transpose(1, 2);
  q = apply_rotary(q, rope_theta_);
  k = apply_rotary(k, rope_theta_);
  if (kv_heads_ != heads_) {  // grouped-query attention: each kv head serves heads/kv_heads heads
    k = k.repeat_interleave(heads_ / kv_heads_, /*dim=*/1);
    v = v.repeat_interleave(heads_ / kv_heads_, /*dim=*/1);
  }
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
  auto future =
      torch::ones({seq, seq}, torch::TensorOptions().dtype(torch::kBool).device(x.device()))
          .triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
  auto out = torch::matmul(probs, v).transpose(1, 2).reshape({batch, seq, heads_ * head_dim_});
  return project(o_proj, out);
}

MlpImpl::MlpImpl(const ModelConfig& c) {
  auto linear = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  gate_proj = register_module("gate_proj", linear(c.hidden_size, c.intermediate_size));
  up_proj = register_module("up_proj", linear(c.hidden_size, c.intermediate_size));
  down_proj = register_module("down_proj", linear(c.intermediate_size, c.hidden_size));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return project(down_proj, F::silu(project(gate_proj, x)) * project(up_proj, x));
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c) {
  self_attn = register_module("self_attn", Attention(c));
  mlp = register_module("mlp", Mlp(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x) {
  auto h = x + self_attn(input_layernorm(x));
  return h + mlp(post_attention_layernorm(h));
}

DecoderStackImpl::DecoderStackImpl(const ModelConfig& c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(DecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor DecoderStackImpl::forward(const torch::Tensor& input_ids) {
  auto h = embed_tokens(input_ids);
  for (const auto& layer : *layers) h = layer->as<DecoderLayer>()->forward(h);
  return norm(h);
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& config) : config_(config) {
  config_.validate();
  model = register_module("model", DecoderStack(config_));
  if (!config_.tie_word_embeddings) {
    lm_head = register_module(
        "lm_head",
        torch::nn::Linear(
            torch::nn::LinearOptions(config_.hidden_size, config_.vocab_size).bias(false)));
  }
}

template <typename Fn>
torch::Tensor LlamaModelImpl::run_unit(int unit, Fn&& forward) {
  if (unit_hooks_ == nullptr) return forward();
  unit_hooks_->before_forward(unit);
  return unit_hooks_->after_forward(unit, forward());
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& input_ids) {
  DST_CHECK(input_ids.dim() == 2, ConfigError,
            "model input must be [batch, seq], got " << input_ids.dim() << " dimensions");
  DST_CHECK(input_ids.size(1) <= config_.max_position_embeddings, ConfigError,
            "sequence length " << input_ids.size(1) << " exceeds max_position_embeddings "
                               << config_.max_position_embeddings);
  // The same computation as DecoderStack::forward + head, unit by unit for the sharding hooks.
  auto h = run_unit(0, [&] {
    auto embedded = model->embed_tokens(input_ids);
    return compute_dtype_ ? embedded.to(*compute_dtype_) : embedded;
  });
  int unit = 1;
  for (const auto& layer : *model->layers)
    h = run_unit(unit++, [&] { return layer->as<DecoderLayer>()->forward(h); });
  return run_unit(unit, [&] {
    auto normed = model->norm(h);
    if (lm_head) return project(lm_head, normed);
    return torch::matmul(normed, model->embed_tokens->weight.to(normed.scalar_type()).t());
  });
}

std::vector<std::vector<std::pair<std::string, torch::Tensor>>> LlamaModelImpl::sharding_units() {
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> units(num_units());
  const int last = num_units() - 1;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    int unit = last;
    if (name.rfind("model.embed_tokens.", 0) == 0) {
      unit = 0;
    } else if (name.rfind("model.layers.", 0) == 0) {
      unit = 1 + std::stoi(name.substr(std::string("model.layers.").size()));
    }
    units[unit].emplace_back(name, item.value());
  }
  return units;
}

void LlamaModelImpl::initialize(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto generator = at::detail::createCPUGenerator(seed);
  for (auto& item : named_parameters(/*recurse=*/true)) {
    torch::Tensor& p = item.value();
    if (p.dim() == 1) {
      p.fill_(1.0);
    } else {
      // Draw on CPU from the explicit generator so every rank and device gets the same values.
      auto values = torch::empty(p.sizes(), torch::kFloat32);
      values.normal_(0.0, config_.initializer_range, generator);
      p.copy_(values);
    }
  }
}

torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t vocab = logits.size(-1);
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

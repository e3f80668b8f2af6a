// LLaMA/DeepSeek-style decoder-only transformer: token embedding; blocks of
// RMSNorm -> causal self-attention (RoPE, grouped-query) -> residual -> RMSNorm -> SwiGLU MLP ->
// residual; final RMSNorm; LM head (tied to the embedding or not). Parameter names match Hugging
// Face checkpoints (model.layers.0.self_attn.q_proj.weight, model.norm.weight, lm_head.weight).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "deepseek_train/model/model_config.h"
#include "deepseek_train/sharding/unit_hooks.h"

namespace dst {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// Rotary position embedding, Hugging Face rotate_half convention:
//   inv_freq[i] = theta^(-2i/d), angle = pos * inv_freq, cos/sin repeated over both halves,
//   x' = x * cos + rotate_half(x) * sin with rotate_half([a, b]) = [-b, a].
// x: [batch, heads, seq, head_dim]; positions 0..seq-1.
torch::Tensor apply_rotary(const torch::Tensor& x, double theta);

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& config);
  // x: [batch, seq, hidden] -> [batch, seq, hidden], causal.
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
  double rope_theta_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const ModelConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // down(silu(gate(x)) * up(x))
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const ModelConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// The "model." prefix of Hugging Face names: embeddings, layers and the final norm.
class DecoderStackImpl : public torch::nn::Module {
 public:
  explicit DecoderStackImpl(const ModelConfig& config);
  torch::Tensor forward(const torch::Tensor& input_ids);  // -> final hidden states
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(DecoderStack);

class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const ModelConfig& config);
  // input_ids: int64 [batch, seq] -> logits float [batch, seq, vocab].
  torch::Tensor forward(const torch::Tensor& input_ids);
  const ModelConfig& config() const { return config_; }

  // Deterministic initialisation from a seed, identical on every rank and independent of the
  // global RNG: linear and embedding weights ~ N(0, initializer_range), norm weights = 1.
  void initialize(uint64_t seed);

  // Sharding units in forward order: 0 = embedding, 1..L = decoder layers, L+1 = final norm and
  // LM head (with tied embeddings the head has no parameter of its own). Each entry lists the
  // unit's parameters by Hugging Face name.
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> sharding_units();
  int num_units() const { return static_cast<int>(config_.num_hidden_layers) + 2; }
  // Hooks called around every unit's forward (nullptr: none). Not owned.
  void set_unit_hooks(UnitHooks* hooks) { unit_hooks_ = hooks; }
  // Activation dtype when it differs from the parameters' (fp16 storage with fp32 compute on
  // CPUs without fp16 matmul): weights are cast at use, so their gradients keep the parameter
  // dtype. Undefined (default): compute in the parameters' dtype.
  void set_compute_dtype(c10::optional<at::ScalarType> dtype) { compute_dtype_ = dtype; }

  DecoderStack model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  template <typename Fn>
  torch::Tensor run_unit(int unit, Fn&& forward);

  ModelConfig config_;
  UnitHooks* unit_hooks_ = nullptr;
  c10::optional<at::ScalarType> compute_dtype_;
};
TORCH_MODULE(LlamaModel);

inline constexpr int64_t kIgnoreIndex = -100;

// Sum of token cross-entropies over labels != kIgnoreIndex (logits [.., vocab], labels [..]).
// Computed in fp32. Normalise by the step's total token count outside.
torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels);

// Number of labels that count towards the loss.
int64_t count_target_tokens(const torch::Tensor& labels);

// True for parameters that take no weight decay (norm weights and biases, i.e. 1-D tensors).
bool is_no_decay_parameter(const std::string& name, const torch::Tensor& parameter);

}  // namespace dst

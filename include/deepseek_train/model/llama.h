// LLaMA/DeepSeek-LLM decoder-only transformer: token embedding; blocks of
// RMSNorm -> causal self-attention (RoPE, grouped-query) -> residual -> RMSNorm -> SwiGLU MLP ->
// residual; final RMSNorm; LM head (tied to the embedding or not). Parameter names match Hugging
// Face checkpoints (model.layers.0.self_attn.q_proj.weight, model.norm.weight, lm_head.weight).
//
// A rank may build only part of the model (ModelShardSpec): under tensor parallelism each
// projection holds its Megatron shard (q/k/v/gate/up column-parallel, o/down row-parallel, the
// embedding and LM head split along the padded vocabulary); under pipeline parallelism the rank
// holds one or more chunks of consecutive layers. Parameter names stay the global HF names, with
// the shard's shape; initialisation draws every full tensor from a generator seeded by
// (seed, name) and keeps this rank's slice, so every layout starts from the same weights.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/model/causal_lm.h"
#include "deepseek_train/model/decoder_lm.h"
#include "deepseek_train/model/kv_cache.h"
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/tensor_parallel/vocab_parallel.h"

namespace dst {

// Rotary position embedding, Hugging Face rotate_half convention:
//   inv_freq[i] = theta^(-2i/d), angle = pos * inv_freq, cos/sin repeated over both halves,
//   x' = x * cos + rotate_half(x) * sin with rotate_half([a, b]) = [-b, a].
// x: [batch, heads, seq, head_dim]; positions first_position .. first_position + seq - 1.
torch::Tensor apply_rotary(const torch::Tensor& x, double theta, int64_t first_position = 0);
// The same at per-row positions [batch, seq] (x [batch, heads, seq, head_dim]).
torch::Tensor apply_rotary_at(const torch::Tensor& x, double theta, const torch::Tensor& positions);

// Self-attention over this rank's heads (num_attention_heads / tp of them, and
// num_key_value_heads / tp key/value heads).
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, comm::CommunicatorPtr tp_group);
  // x: [batch, seq, hidden] -> [batch, seq, hidden], causal.
  torch::Tensor forward(const torch::Tensor& x);
  // The same for tokens that follow those in `cache` (positions continue from its length), which
  // it extends with their keys and values.
  torch::Tensor forward_cached(const torch::Tensor& x, LayerKeyValueCache& cache);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  // Adapters by projection name ("q_proj", ...) and the layer's prefix (null: none).
  std::map<std::string, std::shared_ptr<LinearAdapter>> adapters;
  std::shared_ptr<KeyValuePrefix> prefix;
  int64_t local_heads() const { return heads_; }
  int64_t local_kv_heads() const { return kv_heads_; }
  bool fused = true;  // kernels/fused_ops.h for fp32/bf16 CPU inputs without a prefix

 private:
  // forward (may_fuse: the fused kernel when it applies; it keeps no cache) and forward_cached.
  torch::Tensor run(const torch::Tensor& input, LayerKeyValueCache& cache, bool may_fuse);
  // q/k/v: [batch, heads or kv_heads, seq, head_dim] without rotary; the keys and values of
  // `cache` come first (a fresh cache starts with the prefix, if any).
  torch::Tensor attend(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                       LayerKeyValueCache& cache);
  comm::CommunicatorPtr tp_;
  int64_t heads_, kv_heads_, head_dim_;  // local to this tp rank
  double rope_theta_;
};
TORCH_MODULE(Attention);

// SwiGLU MLP, gate/up column-parallel and down row-parallel (also DeepSeek's dense layers and
// shared experts).
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t hidden_size, int64_t intermediate_size, comm::CommunicatorPtr tp_group);
  torch::Tensor forward(const torch::Tensor& x);  // down(silu(gate(x)) * up(x))
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  std::map<std::string, std::shared_ptr<LinearAdapter>> adapters;  // by projection name
  bool fused = true;  // kernels/fused_ops.h for fp32/bf16 CPU inputs

 private:
  comm::CommunicatorPtr tp_;
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public DecoderBlock {
 public:
  DecoderLayerImpl(const ModelConfig& config, comm::CommunicatorPtr tp_group);
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor forward_cached(const torch::Tensor& x, LayerKeyValueCache& cache) override;
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// The Llama family's CausalLM (causal_lm.h has the contract, decoder_lm.h the skeleton).
// Projections are the tensor-parallel layers of tensor_parallel/parallel_layers.h (q/k/v/gate/up
// column-parallel, o/down row-parallel, embedding and untied head vocab-parallel).
class LlamaModelImpl : public DecoderLMImpl {
 public:
  explicit LlamaModelImpl(const ModelConfig& config, ModelShardSpec shard = {});

  // Every decoder-layer projection of this rank (q/k/v/o, gate/up/down), in layer order.
  std::vector<ProjectionSite> projection_sites() override;
  // Every attention layer of this rank, by global layer index.
  std::vector<KeyValuePrefixSite> key_value_prefix_sites() override;
  // Fused kernels on, no prefix attached, CPU parameters.
  bool uses_fused_attention() const override;

  std::map<int64_t, DecoderLayer> layers;  // "model.layers.<i>", global index i
};
TORCH_MODULE(LlamaModel);

}  // namespace dst

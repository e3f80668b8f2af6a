// LLaMA/DeepSeek-style decoder-only transformer: token embedding; blocks of
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
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/pipeline/partition.h"
#include "deepseek_train/sharding/unit_hooks.h"
#include "deepseek_train/tensor_parallel/vocab_parallel.h"

namespace dst {

// Which part of the model a rank builds.
struct ModelShardSpec {
  comm::CommunicatorPtr tp_group;  // null or size 1: no tensor parallelism
  std::vector<LayerChunk> chunks;  // empty: the whole model as one chunk
  int checkpoint_every = 0;        // activation checkpointing of every k-th layer (0: off)
  // CPU activations go through kernels/fused_ops.h instead of the ATen reference ops: fp32 ones
  // through all of them (linear, RMSNorm, SwiGLU, rotary + causal attention, cross-entropy), bf16
  // ones widened to fp32 through all but the linear (bf16 GEMMs stay with ATen/oneDNN); false
  // keeps the reference ops everywhere (train.kernels=reference).
  bool fused_kernels = true;
};

// How a parameter is split across the tp group: not at all, along dim 0 (column-parallel
// projections, vocabulary rows) or along dim 1 (row-parallel projections).
enum class TpSplit { kReplicated, kDim0, kDim1 };

// Extension points through which adapters (adapters/ module: LoRA, prefix tuning, user types)
// change the model without the model knowing them.
//
// A LinearAdapter adds to one projection's output. `input` is what this tp rank's base projection
// multiplied (the full activation for column-parallel projections, this rank's slice for
// row-parallel ones) and `base_output` its result (a partial sum for row-parallel projections,
// summed across tp afterwards): the adapter returns base_output plus its contribution in the
// same form.
class LinearAdapter : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& input, const torch::Tensor& base_output) = 0;
};

// A KeyValuePrefix gives one attention layer learned keys and values that every query attends
// to before the sequence (prefix tuning): each [num_virtual_tokens, local kv heads, head_dim].
// The sequence's positions then start at num_virtual_tokens (as Hugging Face does with a cache
// of that length); prefix keys are used as given (not rotated).
class KeyValuePrefix : public torch::nn::Module {
 public:
  virtual std::pair<torch::Tensor, torch::Tensor> key_value() = 0;
  virtual int64_t num_virtual_tokens() const = 0;
  // False: the prefix is masked out of attention (positions still start after it).
  virtual bool visible() const { return true; }
};

// A projection an adapter can attach to: its module name as Hugging Face and PEFT name it, the
// module, how its weight is split across tp (kDim0 column-parallel, kDim1 row-parallel), its full
// (unsharded) shape, and where its adapter goes.
struct ProjectionSite {
  std::string name;  // "model.layers.0.self_attn.q_proj"
  torch::nn::Linear linear{nullptr};
  TpSplit split = TpSplit::kReplicated;
  int64_t in_features = 0, out_features = 0;
  std::shared_ptr<LinearAdapter>* adapter = nullptr;
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  bool fused = true;  // kernels/fused_ops.h for fp32/bf16 CPU inputs

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// Rotary position embedding, Hugging Face rotate_half convention:
//   inv_freq[i] = theta^(-2i/d), angle = pos * inv_freq, cos/sin repeated over both halves,
//   x' = x * cos + rotate_half(x) * sin with rotate_half([a, b]) = [-b, a].
// x: [batch, heads, seq, head_dim]; positions first_position .. first_position + seq - 1.
torch::Tensor apply_rotary(const torch::Tensor& x, double theta, int64_t first_position = 0);

// Self-attention over this rank's heads (num_attention_heads / tp of them, and
// num_key_value_heads / tp key/value heads).
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, comm::CommunicatorPtr tp_group);
  // x: [batch, seq, hidden] -> [batch, seq, hidden], causal.
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  // Adapters by projection name ("q_proj", ...) and the layer's prefix (null: none).
  std::map<std::string, std::shared_ptr<LinearAdapter>> adapters;
  std::shared_ptr<KeyValuePrefix> prefix;
  int64_t local_heads() const { return heads_; }
  int64_t local_kv_heads() const { return kv_heads_; }
  bool fused = true;  // kernels/fused_ops.h for fp32/bf16 CPU inputs without a prefix

 private:
  comm::CommunicatorPtr tp_;
  int64_t heads_, kv_heads_, head_dim_;  // local to this tp rank
  double rope_theta_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& config, comm::CommunicatorPtr tp_group);
  torch::Tensor forward(const torch::Tensor& x);  // down(silu(gate(x)) * up(x))
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  std::map<std::string, std::shared_ptr<LinearAdapter>> adapters;  // by projection name
  bool fused = true;  // kernels/fused_ops.h for fp32/bf16 CPU inputs

 private:
  comm::CommunicatorPtr tp_;
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, comm::CommunicatorPtr tp_group);
  torch::Tensor forward(const torch::Tensor& x);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const ModelConfig& config, ModelShardSpec shard = {});

  // Whole model on this rank only (no pipeline split): input_ids int64 [batch, seq] -> logits
  // [batch, seq, vocab] over the full vocabulary (gathered across tp; use forward_chunk and
  // loss_sum in training, which never gather the vocabulary).
  torch::Tensor forward(const torch::Tensor& input_ids);

  // One local chunk: takes input ids (a chunk with the embedding) or hidden states [batch, seq,
  // hidden]; returns hidden states, or this rank's vocabulary columns of the logits for the chunk
  // with the head.
  torch::Tensor forward_chunk(int chunk, const torch::Tensor& input);
  // Sum of token cross-entropies of forward_chunk's logits (vocab-parallel under tp).
  torch::Tensor loss_sum(const torch::Tensor& logits, const torch::Tensor& labels) const;

  const ModelConfig& config() const { return config_; }
  const std::vector<LayerChunk>& chunks() const { return chunks_; }
  int num_chunks() const { return static_cast<int>(chunks_.size()); }
  int tp_size() const { return tp_ ? tp_->size() : 1; }
  int tp_rank() const { return tp_ ? tp_->rank() : 0; }
  // The tensor-parallel group (null without tensor parallelism).
  const comm::CommunicatorPtr& tp_group() const { return tp_; }
  const VocabShard& vocab_shard() const { return vocab_; }

  // Deterministic initialisation, identical for every layout: for each parameter the full
  // tensor ~ N(0, initializer_range) (norm weights = 1) from a generator seeded by (seed, name),
  // vocabulary padding rows zero; this rank keeps its slice.
  void initialize(uint64_t seed);

  // How `name` is split across tp, and its full (unsharded, unpadded) shape. Parameters added by
  // adapters are declared with set_tp_split (default: replicated).
  TpSplit tp_split(const std::string& name) const;
  void set_tp_split(const std::string& name, TpSplit split) { extra_splits_[name] = split; }

  // Every decoder-layer projection of this rank (q/k/v/o, gate/up/down), in layer order.
  std::vector<ProjectionSite> projection_sites();
  // Every attention layer of this rank, by global layer index.
  std::map<int64_t, Attention> attention_layers();
  std::vector<int64_t> full_shape(const std::string& name, const torch::Tensor& local) const;
  // The full parameter from every tp rank's slice (collective over tp; padding removed).
  torch::Tensor gather_tp_parameter(const std::string& name, const torch::Tensor& local) const;

  // Sharding units in forward order over the local chunks: per chunk the embedding (if any, or
  // the copy of a tied embedding that a head on another stage uses), one unit per decoder layer,
  // the final norm and LM head (if any; with tied embeddings the head has no parameter of its
  // own). Each entry lists the unit's parameters by Hugging Face name.
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> sharding_units();
  int num_units() const { return num_units_; }
  // Sharding units of one chunk (sharding_units() lists them chunk after chunk).
  int units_of_chunk(const LayerChunk& chunk) const;
  // Whether the chunk holds a copy of the tied embedding for its head (the embedding itself is
  // on another pipeline stage).
  bool holds_embedding_copy(const LayerChunk& chunk) const;
  // Hooks called around every unit's forward (nullptr: none). Not owned.
  void set_unit_hooks(UnitHooks* hooks) { unit_hooks_ = hooks; }
  // Activation dtype when it differs from the parameters' (fp16 storage with fp32 compute on
  // CPUs without fp16 matmul): weights are cast at use, so their gradients keep the parameter
  // dtype. Undefined (default): compute in the parameters' dtype.
  void set_compute_dtype(c10::optional<at::ScalarType> dtype) { compute_dtype_ = dtype; }
  // Whether CPU attention runs kernels/fused_ops.h (fused kernels on, no prefix attached), which
  // decides the activations it keeps (the memory plan asks).
  bool uses_fused_attention() const;

  // Submodules that exist on this rank (null otherwise), under their Hugging Face names.
  torch::nn::Embedding embed_tokens{nullptr};  // "model.embed_tokens" (or its tied copy)
  std::map<int64_t, DecoderLayer> layers;      // "model.layers.<i>", global index i
  RMSNorm norm{nullptr};                       // "model.norm"
  torch::nn::Linear lm_head{nullptr};          // "lm_head" (null when tied)

 private:
  template <typename Fn>
  torch::Tensor run_unit(int unit, Fn&& forward);
  torch::Tensor run_layer(int64_t index, const torch::Tensor& h);
  torch::Tensor head_logits(const torch::Tensor& h);
  int unit_of_parameter(const std::string& name) const;

  ModelConfig config_;
  comm::CommunicatorPtr tp_;
  VocabShard vocab_;
  std::vector<LayerChunk> chunks_;
  std::vector<int> first_unit_of_chunk_;
  int num_units_ = 0;
  int checkpoint_every_ = 0;
  bool fused_kernels_ = true;
  UnitHooks* unit_hooks_ = nullptr;
  c10::optional<at::ScalarType> compute_dtype_;
  std::map<std::string, TpSplit> extra_splits_;
};
TORCH_MODULE(LlamaModel);

// A stable per-parameter seed: seed mixed with the FNV-1a hash of the name, so every layout and
// every run draws the same initial values for a parameter.
uint64_t parameter_seed(uint64_t seed, const std::string& name);

inline constexpr int64_t kIgnoreIndex = -100;

// Sum of token cross-entropies over labels != kIgnoreIndex (logits [.., vocab], labels [..]).
// Computed in fp32. Normalise by the step's total token count outside.
// `fused`: kernels/fused_ops.h's fused_cross_entropy_sum for fp32 CPU logits.
torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels,
                                bool fused = true);

// Number of labels that count towards the loss.
int64_t count_target_tokens(const torch::Tensor& labels);

// True for parameters that take no weight decay (norm weights and biases, i.e. 1-D tensors).
bool is_no_decay_parameter(const std::string& name, const torch::Tensor& parameter);

}  // namespace dst

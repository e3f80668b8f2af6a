// CausalLM: what the trainer, the pipeline executor, adapters, checkpoints and Hugging Face
// import/export know of a model. A model family (model_family.h) builds one; Llama (llama.h) is
// the first. Everything layout-related is generic here: the tensor-parallel group, how each
// parameter is split (declared by the tensor-parallel layers a model is built from, see
// tensor_parallel/parallel_layers.h, or by set_tp_split), full shapes, gathering a parameter
// across tp, deterministic per-parameter initialisation, sharding units and their hooks.
//
// A family implements the forward of one pipeline chunk, the loss, its chunk/unit structure and
// which unit each parameter belongs to. Parameter names are the family's Hugging Face names (the
// global ones, with the local shard's shape).
#pragma once

#include <c10/util/Optional.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/model/kv_cache.h"
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/pipeline/partition.h"
#include "deepseek_train/precision/precision_policy.h"
#include "deepseek_train/sharding/memory_plan.h"
#include "deepseek_train/sharding/unit_hooks.h"
#include "deepseek_train/tensor_parallel/parallel_layers.h"

namespace dst {

// Which part of the model a rank builds.
struct ModelShardSpec {
  comm::CommunicatorPtr tp_group;  // null or size 1: no tensor parallelism
  // Expert parallelism (MoE families): routed experts split over this group, tokens exchanged
  // with model/expert_dispatch.h. Null or size 1: every expert on every rank.
  comm::CommunicatorPtr ep_group;
  std::vector<LayerChunk> chunks;  // empty: the whole model as one chunk
  int checkpoint_every = 0;        // activation checkpointing of every k-th layer (0: off)
  // CPU activations go through kernels/fused_ops.h instead of the ATen reference ops: fp32 ones
  // through all of them (linear, RMSNorm, SwiGLU, rotary + causal attention, cross-entropy), bf16
  // ones widened to fp32 through all but the linear (bf16 GEMMs stay with ATen/oneDNN); false
  // keeps the reference ops everywhere (train.kernels=reference).
  bool fused_kernels = true;
};

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

// An attention layer a KeyValuePrefix can attach to: its global layer index, its key/value heads
// (all of them and this tp rank's), their dimension, and where the prefix goes.
struct KeyValuePrefixSite {
  int64_t layer = 0;
  int64_t kv_heads = 0, local_kv_heads = 0, head_dim = 0;
  std::shared_ptr<KeyValuePrefix>* prefix = nullptr;
};

// The parameters of one sharding unit, by Hugging Face name.
using NamedParameters = std::vector<std::pair<std::string, torch::Tensor>>;

class CausalLM : public torch::nn::Module {
 public:
  CausalLM(ModelConfig config, comm::CommunicatorPtr tp_group);

  // ---- What a family implements ----
  // One local chunk: takes input ids int64 [batch, seq] (a chunk with the embedding) or hidden
  // states [batch, seq, hidden]; returns hidden states, or this rank's vocabulary columns of the
  // logits for the chunk with the head (run each unit through run_unit for the unit hooks).
  virtual torch::Tensor forward_chunk(int chunk, const torch::Tensor& input) = 0;
  // Sum of token cross-entropies of forward_chunk's logits (vocab-parallel under tp).
  virtual torch::Tensor loss_sum(const torch::Tensor& logits,
                                 const torch::Tensor& labels) const = 0;
  // The chunks of consecutive layers this rank holds, in local order.
  virtual const std::vector<LayerChunk>& chunks() const = 0;
  // Sharding units of one chunk, in forward order (sharding_units() lists them chunk by chunk).
  virtual int units_of_chunk(const LayerChunk& chunk) const = 0;
  // The local unit (index into sharding_units()) a parameter of this rank belongs to.
  virtual int unit_of_parameter(const std::string& name) const = 0;
  // Whether a parameter is (part of) the token embedding, which a tied head shares.
  virtual bool is_embedding(const std::string& name) const = 0;
  // Whether the chunk holds a copy of a tied embedding for its head (the embedding itself is on
  // another pipeline stage). Unit 0 of such a chunk is the copy.
  virtual bool holds_embedding_copy(const LayerChunk&) const { return false; }
  // ---- Extension points for adapters (none by default) ----
  virtual std::vector<ProjectionSite> projection_sites() { return {}; }
  virtual std::vector<KeyValuePrefixSite> key_value_prefix_sites() { return {}; }
  // Registers a module an adapter adds to the model under its Hugging Face name
  // ("model.prefix_encoder"), so its parameters are named and sharded with the model's.
  virtual void register_adapter_module(const std::string& name,
                                       std::shared_ptr<torch::nn::Module> module);
  // Whether CPU attention runs kernels/fused_ops.h (which decides the activations the memory plan
  // counts).
  virtual bool uses_fused_attention() const { return false; }
  // Bytes of the activations one micro-batch of [rows, seq_len] keeps for backward over `layers`
  // of this rank's layers, `checkpointed_layers` of them keeping only their input, in the
  // `compute` precision, plus the logits when `with_logits` (the memory plan asks). Default: the
  // dense decoder's estimate (sharding/memory_plan.h) from config().
  virtual int64_t activation_bytes(int64_t rows, int64_t seq_len, Precision compute, int64_t layers,
                                   bool with_logits, int64_t checkpointed_layers) const;

  // The tensor-parallel all-reduces of decoder layer `layer` per token (the memory plan counts
  // them; recomputed is left false). Default: the dense decoder's {hidden, hidden} each way.
  virtual TpLayerTraffic tp_layer_traffic(int64_t layer) const;

  // Mixture-of-experts families: the tokens routed to each expert of each local MoE layer
  // (int64 [experts], by global layer index) since the last call, which clears them. Counted in
  // forwards with gradients enabled (training forwards and a checkpointed layer's recompute, so
  // each micro-batch once; not evaluation or generation). None by default.
  virtual std::map<int64_t, torch::Tensor> take_expert_loads() { return {}; }
  // Whether a frozen parameter stays fp32 whatever the parameter dtype (DeepSeek-V3's routing
  // correction bias, as transformers keeps it: bf16 would round small updates away).
  virtual bool keeps_fp32(const std::string&) const { return false; }
  // Expert parallelism: whether `name` is a routed expert's parameter (held by one rank of the ep
  // group, its gradient reduced over the expert-data-parallel group), and the name of the
  // parameter at the same place on ep rank `ep_rank` (experts are named by global index).
  // Defaults: no routed experts.
  virtual bool is_routed_expert(const std::string&) const { return false; }
  virtual std::string routed_expert_name_on(const std::string& name, int /*ep_rank*/) const {
    return name;
  }
  // The sequence-wise balance loss of MoE families: every local MoE layer's forward with
  // gradients adds `gradient_weight` x (its sequences' balance losses, summed) to what backward
  // differentiates (0: off, the default); take_balance_loss returns those sums over layers and
  // sequences since the last call (unweighted). No-ops by default.
  virtual void set_balance_loss_weight(double /*gradient_weight*/) {}
  virtual double take_balance_loss() { return 0.0; }
  // Adds `delta` (fp32 [experts]) to MoE layer `layer`'s routing correction bias.
  virtual void add_to_routing_bias(int64_t layer, const torch::Tensor& delta);

  // ---- Generic ----
  // Whole model on this rank only (one chunk with embedding and head): input_ids -> logits over
  // the full vocabulary (gathered across tp; training uses forward_chunk and loss_sum).
  virtual torch::Tensor forward(const torch::Tensor& input_ids);
  // Incremental decoding on a whole model without tensor parallelism: the logits of `input_ids`
  // ([batch, new tokens]) following the cache's tokens, which it then extends. Default:
  // ConfigError (the family has no cache). last_only: the logits of the last position only.
  virtual torch::Tensor forward_incremental(const torch::Tensor& input_ids, KeyValueCache& cache,
                                            bool last_only = false);
  const ModelConfig& config() const { return config_; }
  int num_chunks() const { return static_cast<int>(chunks().size()); }
  const comm::CommunicatorPtr& tp_group() const { return tp_; }  // null without tp
  int tp_size() const { return tp_ ? tp_->size() : 1; }
  int tp_rank() const { return tp_ ? tp_->rank() : 0; }

  // How `name` is split across tp: as the tensor-parallel layer holding it says
  // (record_tp_splits) or as declared by set_tp_split (parameters adapters add); replicated
  // otherwise.
  TpSplit tp_split(const std::string& name) const;
  void set_tp_split(const std::string& name, TpSplit split) { splits_[name] = split; }
  // Whether any parameter is split across tp (false: record_tp_splits found no tensor-parallel
  // layer, or was not called).
  bool splits_any_parameter() const {
    for (const auto& [name, split] : splits_)
      if (split != TpSplit::kReplicated) return true;
    return false;
  }
  // The full (unsharded, unpadded) shape of `name` from this rank's `local` tensor.
  std::vector<int64_t> full_shape(const std::string& name, const torch::Tensor& local) const;
  // The full parameter from every tp rank's slice (collective over tp; padding removed).
  torch::Tensor gather_tp_parameter(const std::string& name, const torch::Tensor& local) const;

  // Deterministic initialisation, identical for every layout: initialize_parameter for every
  // parameter (deferred ones get their memory here).
  void initialize(uint64_t seed);
  // One parameter (allocating it when deferred, core/deferred_tensor.h): the full tensor
  // ~ N(0, initializer_range) (1-D replicated ones, norm weights, = 1) from a generator seeded by
  // (seed, name), vocabulary padding rows zero; this rank keeps its tp slice.
  virtual void initialize_parameter(const std::string& name, torch::Tensor& parameter,
                                    uint64_t seed);

  // Every local parameter grouped by sharding unit, units in forward order over the chunks.
  std::vector<NamedParameters> sharding_units();
  int num_units() const;
  // The first local unit of each chunk.
  std::vector<int> first_unit_of_chunks() const;
  // Hooks called around every unit's forward (nullptr: none). Not owned.
  void set_unit_hooks(UnitHooks* hooks) { unit_hooks_ = hooks; }
  UnitHooks* unit_hooks() const { return unit_hooks_; }
  // Activation dtype when it differs from the parameters' (fp16 storage with fp32 compute on
  // CPUs without fp16 matmul): weights are cast at use, so their gradients keep the parameter
  // dtype. Undefined (default): compute in the parameters' dtype.
  void set_compute_dtype(c10::optional<at::ScalarType> dtype) { compute_dtype_ = dtype; }
  const c10::optional<at::ScalarType>& compute_dtype() const { return compute_dtype_; }

 protected:
  // Runs one unit's forward between the unit hooks.
  template <typename Fn>
  torch::Tensor run_unit(int unit, Fn&& forward) {
    if (unit_hooks_ == nullptr) return forward();
    unit_hooks_->before_forward(unit);
    return unit_hooks_->after_forward(unit, forward());
  }
  // Records the split (and vocabulary padding) of every parameter held by a tensor-parallel
  // layer (tensor_parallel/parallel_layers.h); a family calls it at the end of its constructor.
  void record_tp_splits();
  ModelConfig config_;

 private:
  comm::CommunicatorPtr tp_;
  std::map<std::string, TpSplit> splits_;
  std::map<std::string, int64_t> unpadded_rows_;  // vocabulary-split parameters
  UnitHooks* unit_hooks_ = nullptr;
  c10::optional<at::ScalarType> compute_dtype_;
};

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

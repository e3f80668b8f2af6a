// The decoder-only skeleton every family shares: token embedding, a stack of decoder blocks,
// final RMSNorm and LM head (tied to the embedding or not), split into pipeline chunks and
// sharding units. A family (Llama in llama.h, DeepSeek-V2/V3 in deepseek.h) supplies only its
// DecoderBlock; this class builds the rest under the Hugging Face names
// (model.embed_tokens, model.layers.<i>, model.norm, lm_head), places the tensor-parallel region
// boundaries of the embedding and head, runs activation checkpointing and incremental decoding.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "deepseek_train/model/causal_lm.h"
#include "deepseek_train/model/kv_cache.h"
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/tensor_parallel/vocab_parallel.h"

namespace dst {

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

// One decoder layer: [batch, seq, hidden] -> [batch, seq, hidden].
class DecoderBlock : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // The same for tokens that follow those in `cache`, which it extends.
  virtual torch::Tensor forward_cached(const torch::Tensor& x, LayerKeyValueCache& cache) = 0;
};

class DecoderLMImpl : public CausalLM {
 public:
  torch::Tensor forward_chunk(int chunk, const torch::Tensor& input) override;
  torch::Tensor loss_sum(const torch::Tensor& logits, const torch::Tensor& labels) const override;
  torch::Tensor forward_incremental(const torch::Tensor& input_ids, KeyValueCache& cache,
                                    bool last_only = false) override;
  const std::vector<LayerChunk>& chunks() const override { return chunks_; }
  // Per chunk: the embedding (if any, or the copy of a tied embedding that a head on another
  // stage uses), one unit per decoder layer, the final norm and LM head (if any; with tied
  // embeddings the head has no parameter of its own).
  int units_of_chunk(const LayerChunk& chunk) const override;
  int unit_of_parameter(const std::string& name) const override;
  bool is_embedding(const std::string& name) const override;
  bool holds_embedding_copy(const LayerChunk& chunk) const override;
  const VocabShard& vocab_shard() const { return vocab_; }

  // Submodules that exist on this rank (null otherwise), under their Hugging Face names.
  torch::nn::Embedding embed_tokens{nullptr};  // "model.embed_tokens" (or its tied copy)
  RMSNorm norm{nullptr};                       // "model.norm"
  torch::nn::Linear lm_head{nullptr};          // "lm_head" (null when tied)

 protected:
  // Validates the config and the chunks; call build_stack from the family's constructor.
  DecoderLMImpl(const ModelConfig& config, ModelShardSpec shard);
  // Registers the embedding, the blocks this rank holds (make_block(global index)), the final
  // norm and the head, then records the tp splits.
  void build_stack(const std::function<std::shared_ptr<DecoderBlock>(int64_t)>& make_block);
  // The block of global layer `index` (on this rank).
  DecoderBlock& block(int64_t index) const { return *blocks_.at(index); }
  bool fused_kernels() const { return fused_kernels_; }

 private:
  torch::Tensor run_layer(int64_t index, const torch::Tensor& h);
  torch::Tensor head_logits(const torch::Tensor& h);

  VocabShard vocab_;
  std::vector<LayerChunk> chunks_;
  std::vector<int> first_unit_of_chunk_;
  std::map<int64_t, std::shared_ptr<DecoderBlock>> blocks_;  // by global layer index
  int checkpoint_every_ = 0;
  bool fused_kernels_ = true;
};

}  // namespace dst

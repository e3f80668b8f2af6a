#include "deepseek_train/model/decoder_lm.h"

#include <torch/torch.h>

#include "deepseek_train/core/error.h"
#include "deepseek_train/kernels/fused_ops.h"
#include "deepseek_train/privacy/per_example_tap.h"
#include "deepseek_train/tensor_parallel/parallel_layers.h"
#include "model_ops.h"

namespace dst {

using model_ops::enter_tp;
using model_ops::fusable;
using model_ops::project;

namespace {

// Activation checkpointing of one decoder block: forward without saving activations, recompute
// (with autograd) in backward. The block travels as its address (autograd contexts hold IValues);
// the model owns it for longer than any graph.
struct CheckpointedBlock : torch::autograd::Function<CheckpointedBlock> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               DecoderBlock* block) {
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(block));
    torch::NoGradGuard no_grad;
    return block->forward(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* block =
        reinterpret_cast<DecoderBlock*>(static_cast<intptr_t>(ctx->saved_data["block"].toInt()));
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor out;
    {
      torch::AutoGradMode enable(true);
      out = block->forward(x);
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
  // As Hugging Face: normalise in fp32, cast back, then scale.
  auto normalize = [&] {
    auto x32 = x.to(torch::kFloat32);
    auto variance = x32.pow(2).mean(-1, /*keepdim=*/true);
    return (x32 * torch::rsqrt(variance + eps_)).to(x.scalar_type());
  };
  PerExampleGradientTap* tap = active_per_example_tap();
  if (fused && fusable(x) && fusable(weight)) {
    torch::Tensor out = fused_rms_norm(x, weight, eps_);
    if (tap) {
      torch::NoGradGuard no_grad;
      tap->scale(weight, normalize(), out);
    }
    return out;
  }
  auto normed = normalize();
  torch::Tensor out = weight.to(normed.scalar_type()) * normed;
  if (tap) tap->scale(weight, normed, out);
  return out;
}

DecoderLMImpl::DecoderLMImpl(const ModelConfig& config, ModelShardSpec shard)
    : CausalLM(config, shard.tp_group),
      chunks_(std::move(shard.chunks)),
      checkpoint_every_(shard.checkpoint_every),
      fused_kernels_(shard.fused_kernels) {
  config_.validate();
  if (chunks_.empty()) chunks_.push_back(whole_model(config_.num_hidden_layers));
  vocab_ = dst::vocab_shard(config_.vocab_size, tp_size(), tp_rank());
  for (const LayerChunk& chunk : chunks_) {
    DST_CHECK(
        chunk.begin >= 0 && chunk.begin <= chunk.end && chunk.end <= config_.num_hidden_layers,
        ConfigError,
        "model chunk [" << chunk.begin << ", " << chunk.end << ") is outside the "
                        << config_.num_hidden_layers << " layers");
  }
}

void DecoderLMImpl::build_stack(
    const std::function<std::shared_ptr<DecoderBlock>(int64_t)>& make_block) {
  bool has_embedding = false, has_head = false;
  for (const LayerChunk& chunk : chunks_) {
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
    for (int64_t i = chunk.begin; i < chunk.end; ++i)
      blocks_.emplace(i, layer_holder->register_module(std::to_string(i), make_block(i)));
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

bool DecoderLMImpl::holds_embedding_copy(const LayerChunk& chunk) const {
  return config_.tie_word_embeddings && chunk.has_head && !chunk.has_embedding;
}

int DecoderLMImpl::units_of_chunk(const LayerChunk& chunk) const {
  return static_cast<int>(chunk.end - chunk.begin) + (chunk.has_embedding ? 1 : 0) +
         (holds_embedding_copy(chunk) ? 1 : 0) + (chunk.has_head ? 1 : 0);
}

torch::Tensor DecoderLMImpl::run_layer(int64_t index, const torch::Tensor& h) {
  DecoderBlock& layer = block(index);
  const bool checkpoint = checkpoint_every_ > 0 && index % checkpoint_every_ == 0 &&
                          torch::GradMode::is_enabled() && h.requires_grad();
  if (!checkpoint) return layer.forward(h);
  return CheckpointedBlock::apply(h, &layer);
}

torch::Tensor DecoderLMImpl::head_logits(const torch::Tensor& h) {
  auto normed = enter_tp(norm(h), tp_group());
  return project(lm_head ? lm_head->weight : embed_tokens->weight, normed, fused_kernels_);
}

torch::Tensor DecoderLMImpl::forward_chunk(int chunk_index, const torch::Tensor& input) {
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
      if (PerExampleGradientTap* tap = active_per_example_tap())
        tap->embedding(embed_tokens->weight, input, embedded);
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

torch::Tensor DecoderLMImpl::forward_incremental(const torch::Tensor& input_ids,
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
  for (auto& [index, layer] : blocks_) {
    LayerKeyValueCache& layer_cache = cache.layers[index];
    layer_cache.left_padding = cache.left_padding;
    h = layer->forward_cached(h, layer_cache);
  }
  cache.tokens = end;
  if (last_only) h = h.narrow(1, h.size(1) - 1, 1);  // a long prompt's logits would be large
  return head_logits(h);
}

torch::Tensor DecoderLMImpl::loss_sum(const torch::Tensor& logits,
                                      const torch::Tensor& labels) const {
  if (!tp_group()) return cross_entropy_sum(logits, labels, fused_kernels_);
  return vocab_parallel_cross_entropy_sum(logits, labels, vocab_, *tp_group(), kIgnoreIndex);
}

bool DecoderLMImpl::is_embedding(const std::string& name) const {
  return name.rfind("model.embed_tokens.", 0) == 0;
}

int DecoderLMImpl::unit_of_parameter(const std::string& name) const {
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

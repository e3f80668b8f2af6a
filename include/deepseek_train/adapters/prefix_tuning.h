// Prefix tuning (Li & Liang 2021) with PEFT's semantics: every attention layer gets
// num_virtual_tokens learned keys and values that all queries attend to before the sequence (the
// sequence's positions start after them, as with a Hugging Face cache of that length). The
// prefixes are parameters of each layer (model.layers.<i>.self_attn.prefix.key / .value,
// [num_virtual_tokens, kv heads, head_dim], split over kv heads under tp), or, with
// `projection: {hidden: H}`, produced by PEFT's reparameterisation MLP (embedding -> Linear ->
// tanh -> Linear, model.prefix_encoder.*; each layer computes only its rows of the last Linear).
// Export: PEFT's `prompt_embeddings` [num_virtual_tokens, layers * 2 * kv_dim] (the MLP's output
// when projected) with prefix_projection false, so PEFT loads it directly.
#pragma once

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "deepseek_train/adapters/adapter.h"

namespace dst {

struct PrefixTuningOptions {
  int64_t num_virtual_tokens = 0;
  int64_t projection_hidden = 0;  // 0: no reparameterisation MLP
  static PrefixTuningOptions from_config(const AdapterConfig& config);
};

// The reparameterisation MLP shared by every layer (replicated across tp).
class PrefixEncoderImpl : public torch::nn::Module {
 public:
  PrefixEncoderImpl(int64_t num_virtual_tokens, int64_t hidden, int64_t encoder_hidden,
                    int64_t output);
  // Rows [begin, begin + length) of the MLP's output columns: [num_virtual_tokens, length].
  torch::Tensor columns(int64_t begin, int64_t length);
  torch::nn::Embedding embedding{nullptr};
  torch::nn::Linear first{nullptr}, second{nullptr};
};
TORCH_MODULE(PrefixEncoder);

class PrefixTuningAdapter final : public Adapter {
 public:
  explicit PrefixTuningAdapter(const AdapterConfig& config);
  std::string type() const override { return "prefix"; }
  void apply(CausalLM& model, uint64_t seed) override;
  PeftAdapterFiles peft_files(const std::map<std::string, at::Tensor>& full,
                              const ModelConfig& config) const override;
  // Masks the prefixes out of attention (tests: the output is then the base model's).
  void set_visible(bool visible);
  const PrefixTuningOptions& options() const { return options_; }

 private:
  PrefixTuningOptions options_;
  std::string where_;
  std::vector<std::shared_ptr<KeyValuePrefix>> prefixes_;
  PrefixEncoder encoder_{nullptr};
};

}  // namespace dst

// Model hyper-parameters of a LLaMA or DeepSeek-V2/V3 decoder, named exactly as in Hugging
// Face's LlamaConfig / DeepseekV2Config / DeepseekV3Config so a config.json maps onto it field by
// field. Torch-free.
#pragma once

#include <cstdint>
#include <string>

namespace dst {

// Rotary scaling (config.json `rope_scaling`, or transformers v5's `rope_parameters`): none
// ("default") or YaRN, with Hugging Face's field names and defaults.
struct RopeScaling {
  std::string rope_type = "default";  // "default" | "yarn"
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;  // 0: max_position_embeddings
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 0.0, mscale_all_dim = 0.0;  // 0: not set
  double attention_factor = 0.0;              // 0: derived from mscale / mscale_all_dim
  bool truncate = true;
  bool is_default() const { return rope_type == "default"; }
};

struct ModelConfig {
  // The model family (model/model_family.h) that builds the model: Hugging Face's model_type.
  std::string model_type = "llama";
  int64_t vocab_size = 259;
  int64_t hidden_size = 128;
  int64_t intermediate_size = 352;
  int64_t num_hidden_layers = 2;
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 4;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;

  // ---- DeepSeek-V2/V3 (model_type deepseek_v2 / deepseek_v3); unused by Llama ----
  // Multi-head Latent Attention.
  int64_t q_lora_rank = 0;  // 0 (config.json null): a plain q_proj
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  bool rope_interleave = true;  // V3: rotary pairs (2i, 2i+1); V2 is always pairwise
  RopeScaling rope_scaling;
  // DeepSeekMoE: layers >= first_k_dense_replace route each token to num_experts_per_tok of
  // n_routed_experts experts (moe_intermediate_size each) plus n_shared_experts always used.
  int64_t moe_intermediate_size = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t first_k_dense_replace = 0;
  int64_t n_group = 1, topk_group = 1;
  std::string topk_method;   // V2: greedy | group_limited_greedy; V3: noaux_tc
  std::string scoring_func;  // V2: softmax; V3: sigmoid
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;

  bool is_deepseek() const { return model_type == "deepseek_v2" || model_type == "deepseek_v3"; }
  bool is_moe_layer(int64_t layer) const {
    return is_deepseek() && n_routed_experts > 0 && layer >= first_k_dense_replace;
  }
  // Whether any layer is a MoE layer (the last one is, if any is).
  bool has_moe() const { return is_moe_layer(num_hidden_layers - 1); }
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Llama's per-head dimension (DeepSeek's are the qk_/v_head_dim fields).
  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  // Throws ConfigError naming the field when the numbers cannot make a model
  // (e.g. heads not dividing hidden_size, kv heads not dividing heads).
  void validate() const;

  // Number of trainable parameters (counting a tied embedding once).
  int64_t num_parameters() const;
  // Parameters one token computes with: num_parameters less the routed experts it is not sent
  // to (equal for dense models). Model FLOPs and MFU count these.
  int64_t num_active_parameters() const;
};

// Reads a Hugging Face config.json of a Llama or DeepSeek-V2/V3 model (fields it has no use for
// are ignored, missing ones take Hugging Face's defaults for the model_type). Throws ConfigError
// naming the file and the field on bad values, on a `model_type` (or `architectures`) of another
// model family, and on an option this implementation does not have set to a non-plain value
// (Llama: `rope_scaling`, `head_dim` other than hidden_size / num_attention_heads; both:
// `attention_bias`, `mlp_bias`, `hidden_act` other than silu, `attention_dropout`; DeepSeek:
// `moe_layer_freq` other than 1, an unknown `topk_method` or `scoring_func`).
ModelConfig model_config_from_hf_json(const std::string& path);
// The same from JSON text; `source` names it in errors.
ModelConfig model_config_from_hf_json_text(const std::string& text, const std::string& source);
// A Hugging Face config.json for the model (LlamaConfig, DeepseekV2Config or DeepseekV3Config;
// pretty-printed, newline-terminated).
std::string model_config_to_hf_json(const ModelConfig& config);

// CheckpointError "<where>: checkpoint of a different model: model.<key> is A there, B in the
// recipe" when `saved` (a checkpoint's or a Hugging Face folder's) has other shapes than `ours`.
void check_same_model(const ModelConfig& saved, const ModelConfig& ours, const std::string& where);

}  // namespace dst

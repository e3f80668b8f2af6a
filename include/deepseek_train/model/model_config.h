// Model hyper-parameters of a LLaMA/DeepSeek-style decoder, named exactly as in Hugging Face's
// LlamaConfig so a config.json maps onto it field by field. Torch-free.
#pragma once

#include <cstdint>
#include <string>

namespace dst {

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

  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  // Throws ConfigError naming the field when the numbers cannot make a model
  // (e.g. heads not dividing hidden_size, kv heads not dividing heads).
  void validate() const;

  // Number of trainable parameters (counting a tied embedding once).
  int64_t num_parameters() const;
};

// Reads a Hugging Face config.json (LlamaConfig fields; fields it has no use for are ignored,
// missing ones keep their defaults). Throws ConfigError naming the file and the field on bad
// values, on a `model_type` (or `architectures`) of another model family, and on a Llama option
// this implementation does not have set to a non-plain value (`rope_scaling`, `attention_bias`,
// `mlp_bias`, `hidden_act` other than silu, `attention_dropout`, a `head_dim` other than
// hidden_size / num_attention_heads).
ModelConfig model_config_from_hf_json(const std::string& path);
// The same from JSON text; `source` names it in errors.
ModelConfig model_config_from_hf_json_text(const std::string& text, const std::string& source);
// A Hugging Face LlamaConfig config.json for the model (pretty-printed, newline-terminated).
std::string model_config_to_hf_json(const ModelConfig& config);

// CheckpointError "<where>: checkpoint of a different model: model.<key> is A there, B in the
// recipe" when `saved` (a checkpoint's or a Hugging Face folder's) has other shapes than `ours`.
void check_same_model(const ModelConfig& saved, const ModelConfig& ours, const std::string& where);

}  // namespace dst

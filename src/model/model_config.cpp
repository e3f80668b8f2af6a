#include "deepseek_train/model/model_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "deepseek_train/core/error.h"

namespace dst {

void ModelConfig::validate() const {
  DST_CHECK(vocab_size > 0, ConfigError, "model.vocab_size must be positive, got " << vocab_size);
  DST_CHECK(hidden_size > 0, ConfigError,
            "model.hidden_size must be positive, got " << hidden_size);
  DST_CHECK(intermediate_size > 0, ConfigError,
            "model.intermediate_size must be positive, got " << intermediate_size);
  DST_CHECK(num_hidden_layers > 0, ConfigError,
            "model.num_hidden_layers must be positive, got " << num_hidden_layers);
  DST_CHECK(num_attention_heads > 0, ConfigError,
            "model.num_attention_heads must be positive, got " << num_attention_heads);
  DST_CHECK(hidden_size % num_attention_heads == 0, ConfigError,
            "model.hidden_size (" << hidden_size
                                  << ") is not divisible by model.num_attention_heads ("
                                  << num_attention_heads << ")");
  DST_CHECK(head_dim() % 2 == 0, ConfigError,
            "model: head dimension hidden_size/num_attention_heads = " << head_dim()
                                                                       << " must be even for RoPE");
  DST_CHECK(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0, ConfigError,
            "model.num_attention_heads (" << num_attention_heads
                                          << ") is not divisible by model.num_key_value_heads ("
                                          << num_key_value_heads << ")");
  DST_CHECK(rms_norm_eps > 0, ConfigError, "model.rms_norm_eps must be positive");
  DST_CHECK(rope_theta > 0, ConfigError, "model.rope_theta must be positive");
  DST_CHECK(max_position_embeddings > 0, ConfigError,
            "model.max_position_embeddings must be positive");
  DST_CHECK(initializer_range > 0, ConfigError, "model.initializer_range must be positive");
}

int64_t ModelConfig::num_parameters() const {
  const int64_t kv_dim = head_dim() * num_key_value_heads;
  const int64_t attention = hidden_size * hidden_size * 2 + hidden_size * kv_dim * 2;
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t per_layer = attention + mlp + 2 * hidden_size;
  const int64_t embedding = vocab_size * hidden_size;
  const int64_t head = tie_word_embeddings ? 0 : vocab_size * hidden_size;
  return embedding + num_hidden_layers * per_layer + hidden_size + head;
}

namespace {
template <typename T>
void read_field(const nlohmann::json& json, const std::string& path, const char* key, T* out) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) return;
  if constexpr (std::is_same_v<T, int64_t>) {
    // get<int64_t> truncates a float; one outside int64's range would be undefined behaviour.
    if (it->is_number_float()) {
      const double value = it->get<double>();
      DST_CHECK(value >= -0x1p63 && value < 0x1p63, ConfigError,
                path << ": field '" << key << "' is out of range (" << it->dump() << ")");
    }
  }
  try {
    *out = it->get<T>();
  } catch (const nlohmann::json::exception&) {
    DST_THROW(ConfigError,
              path << ": field '" << key << "' has the wrong type (" << it->type_name() << ")");
  }
}
}  // namespace

ModelConfig model_config_from_hf_json(const std::string& path) {
  std::ifstream in(path);
  DST_CHECK(in.good(), ConfigError, path << ": cannot open model config");
  std::ostringstream text;
  text << in.rdbuf();
  return model_config_from_hf_json_text(text.str(), path);
}

std::string model_config_to_hf_json(const ModelConfig& c) {
  const nlohmann::json json = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"max_position_embeddings", c.max_position_embeddings},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"initializer_range", c.initializer_range},
      {"hidden_act", "silu"},
      {"torch_dtype", "float32"},
  };
  return json.dump(2) + "\n";
}

ModelConfig model_config_from_hf_json_text(const std::string& text, const std::string& path) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    DST_THROW(ConfigError, path << ": invalid JSON at byte " << e.byte);
  } catch (const nlohmann::json::exception& e) {
    // A number too large for a double (out_of_range.406) carries no position.
    DST_THROW(ConfigError, path << ": invalid JSON: " << e.what());
  }
  DST_CHECK(json.is_object(), ConfigError, path << ": expected a JSON object");
  ModelConfig config;
  read_field(json, path, "vocab_size", &config.vocab_size);
  read_field(json, path, "hidden_size", &config.hidden_size);
  read_field(json, path, "intermediate_size", &config.intermediate_size);
  read_field(json, path, "num_hidden_layers", &config.num_hidden_layers);
  read_field(json, path, "num_attention_heads", &config.num_attention_heads);
  config.num_key_value_heads = config.num_attention_heads;
  read_field(json, path, "num_key_value_heads", &config.num_key_value_heads);
  read_field(json, path, "rms_norm_eps", &config.rms_norm_eps);
  read_field(json, path, "rope_theta", &config.rope_theta);
  read_field(json, path, "max_position_embeddings", &config.max_position_embeddings);
  read_field(json, path, "tie_word_embeddings", &config.tie_word_embeddings);
  read_field(json, path, "initializer_range", &config.initializer_range);
  try {
    config.validate();
  } catch (const ConfigError& e) {
    DST_THROW(ConfigError, path << ": " << e.what());
  }
  return config;
}

}  // namespace dst

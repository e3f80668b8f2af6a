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
  // Other families' architectures names are theirs to write (model/model_family.h).
  nlohmann::json json = {
      {"model_type", c.model_type},
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
  if (c.model_type == "llama") json["architectures"] = {"LlamaForCausalLM"};
  return json.dump(2) + "\n";
}

namespace {

// The model family a config.json names: `model_type` (Hugging Face's key), else the first of
// `architectures`; a config naming neither (older files of ours) is read as Llama. Only the Llama
// family exists so far; a config of another family is refused here instead of loading as a
// wrong Llama.
void check_model_family(const nlohmann::json& json, const std::string& path) {
  static constexpr const char* kFamilies = "llama (LlamaForCausalLM)";
  auto type = json.find("model_type");
  if (type != json.end() && !type->is_null()) {
    DST_CHECK(type->is_string(), ConfigError,
              path << ": field 'model_type' has the wrong type (" << type->type_name() << ")");
    DST_CHECK(type->get<std::string>() == "llama", ConfigError,
              path << ": field 'model_type' is '" << type->get<std::string>()
                   << "', which no model family here implements (known: " << kFamilies << ")");
    return;
  }
  auto architectures = json.find("architectures");
  if (architectures == json.end() || !architectures->is_array() || architectures->empty()) return;
  const nlohmann::json& first = architectures->front();
  DST_CHECK(first.is_string() && first.get<std::string>() == "LlamaForCausalLM", ConfigError,
            path << ": field 'architectures' names " << first.dump()
                 << ", which no model family here implements (known: " << kFamilies << ")");
}

// Llama options of Hugging Face's LlamaConfig that this implementation does not have: set to
// anything but their plain value they would change the model, so they are refused by name.
void check_llama_fields_implemented(const nlohmann::json& json, const std::string& path,
                                    const ModelConfig& config) {
  const auto is_set = [&](const char* key) {
    auto it = json.find(key);
    return it != json.end() && !it->is_null();
  };
  const auto refuse = [&](const char* key, const std::string& why) {
    DST_THROW(ConfigError, path << ": field '" << key << "' = " << json.at(key).dump() << " is not "
                                << "implemented (" << why << ")");
  };
  if (is_set("rope_scaling")) refuse("rope_scaling", "only unscaled rotary embeddings");
  if (is_set("rope_parameters")) {
    const nlohmann::json& rope = json.at("rope_parameters");
    const auto rope_type = rope.is_object() ? rope.find("rope_type") : rope.end();
    if (!rope.is_object() || (rope_type != rope.end() && *rope_type != "default"))
      refuse("rope_parameters", "only rope_type 'default'");
  }
  for (const char* key : {"attention_bias", "mlp_bias"})
    if (is_set(key) && json.at(key) != false) refuse(key, "projections have no bias");
  if (is_set("hidden_act") && json.at("hidden_act") != "silu")
    refuse("hidden_act", "the MLP is SwiGLU, i.e. silu");
  if (is_set("attention_dropout") && json.at("attention_dropout") != 0)
    refuse("attention_dropout", "no dropout");
  if (is_set("head_dim") && json.at("head_dim") != config.head_dim())
    refuse("head_dim",
           "head_dim is hidden_size / num_attention_heads = " + std::to_string(config.head_dim()));
}

}  // namespace

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
  // Transformers v5 writes rope_theta inside rope_parameters.
  if (auto rope = json.find("rope_parameters"); rope != json.end() && rope->is_object())
    read_field(*rope, path, "rope_theta", &config.rope_theta);
  check_model_family(json, path);
  try {
    config.validate();
  } catch (const ConfigError& e) {
    DST_THROW(ConfigError, path << ": " << e.what());
  }
  check_llama_fields_implemented(json, path, config);
  return config;
}

void check_same_model(const ModelConfig& saved, const ModelConfig& ours,
                      const std::string& directory) {
  const std::pair<const char*, std::pair<int64_t, int64_t>> fields[] = {
      {"vocab_size", {saved.vocab_size, ours.vocab_size}},
      {"hidden_size", {saved.hidden_size, ours.hidden_size}},
      {"intermediate_size", {saved.intermediate_size, ours.intermediate_size}},
      {"num_hidden_layers", {saved.num_hidden_layers, ours.num_hidden_layers}},
      {"num_attention_heads", {saved.num_attention_heads, ours.num_attention_heads}},
      {"num_key_value_heads", {saved.num_key_value_heads, ours.num_key_value_heads}},
      {"tie_word_embeddings", {saved.tie_word_embeddings, ours.tie_word_embeddings}},
  };
  for (const auto& [key, values] : fields)
    DST_CHECK(values.first == values.second, CheckpointError,
              directory << ": checkpoint of a different model: model." << key << " is "
                        << values.first << " there, " << values.second << " in the recipe");
}

}  // namespace dst

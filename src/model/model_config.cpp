#include "deepseek_train/model/model_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

void check_positive(int64_t value, const char* key) {
  DST_CHECK(value > 0, ConfigError, "model." << key << " must be positive, got " << value);
}

void validate_mla(const ModelConfig& c) {
  check_positive(c.kv_lora_rank, "kv_lora_rank");
  check_positive(c.qk_nope_head_dim, "qk_nope_head_dim");
  check_positive(c.qk_rope_head_dim, "qk_rope_head_dim");
  check_positive(c.v_head_dim, "v_head_dim");
  DST_CHECK(c.q_lora_rank >= 0, ConfigError, "model.q_lora_rank must be positive or null");
  DST_CHECK(c.qk_rope_head_dim % 2 == 0, ConfigError,
            "model.qk_rope_head_dim (" << c.qk_rope_head_dim << ") must be even for RoPE");
  DST_CHECK(c.num_key_value_heads == c.num_attention_heads, ConfigError,
            "model.num_key_value_heads ("
                << c.num_key_value_heads << ") must equal num_attention_heads ("
                << c.num_attention_heads << "): MLA's kv_b_proj makes one key/value per head");
}

void validate_routing(const ModelConfig& c) {
  const bool v3 = c.model_type == "deepseek_v3";
  const bool grouped = v3 || c.topk_method == "group_limited_greedy";
  DST_CHECK(!grouped || c.topk_group * (c.n_routed_experts / c.n_group) >= c.num_experts_per_tok,
            ConfigError,
            "model: topk_group (" << c.topk_group << ") groups of "
                                  << c.n_routed_experts / c.n_group
                                  << " experts hold fewer than num_experts_per_tok ("
                                  << c.num_experts_per_tok << ")");
  DST_CHECK(!v3 || c.n_routed_experts / c.n_group >= 2, ConfigError,
            "model: DeepSeek-V3 scores each of n_group ("
                << c.n_group
                << ") groups by its top 2 experts: n_routed_experts / n_group must be >= 2");
  DST_CHECK(v3 ? c.topk_method == "noaux_tc"
               : (c.topk_method == "greedy" || c.topk_method == "group_limited_greedy"),
            ConfigError,
            "model.topk_method '" << c.topk_method << "' is not known for " << c.model_type
                                  << " (known: "
                                  << (v3 ? "noaux_tc" : "greedy, group_limited_greedy") << ")");
  const char* scoring = v3 ? "sigmoid" : "softmax";
  DST_CHECK(c.scoring_func == scoring, ConfigError,
            "model.scoring_func '" << c.scoring_func << "' is not known for " << c.model_type
                                   << " (known: " << scoring << ")");
  DST_CHECK(c.routed_scaling_factor > 0, ConfigError,
            "model.routed_scaling_factor must be positive");
}

void validate_moe(const ModelConfig& c) {
  check_positive(c.n_routed_experts, "n_routed_experts");
  check_positive(c.moe_intermediate_size, "moe_intermediate_size");
  DST_CHECK(c.n_shared_experts >= 0, ConfigError, "model.n_shared_experts must not be negative");
  DST_CHECK(c.first_k_dense_replace >= 0, ConfigError,
            "model.first_k_dense_replace must not be negative");
  DST_CHECK(c.num_experts_per_tok > 0 && c.num_experts_per_tok <= c.n_routed_experts, ConfigError,
            "model.num_experts_per_tok (" << c.num_experts_per_tok << ") must be in 1.."
                                          << c.n_routed_experts << " (n_routed_experts)");
  check_positive(c.n_group, "n_group");
  DST_CHECK(c.n_routed_experts % c.n_group == 0, ConfigError,
            "model.n_routed_experts (" << c.n_routed_experts << ") is not divisible by n_group ("
                                       << c.n_group << ")");
  DST_CHECK(
      c.topk_group > 0 && c.topk_group <= c.n_group, ConfigError,
      "model.topk_group (" << c.topk_group << ") must be in 1.." << c.n_group << " (n_group)");
  validate_routing(c);
}

void validate_rope_scaling(const RopeScaling& r) {
  DST_CHECK(r.rope_type == "default" || r.rope_type == "yarn", ConfigError,
            "model.rope_scaling.rope_type '" << r.rope_type
                                             << "' is not implemented (known: default, yarn)");
  DST_CHECK(r.factor > 0, ConfigError, "model.rope_scaling.factor must be positive");
  DST_CHECK(r.beta_fast > 0 && r.beta_slow > 0, ConfigError,
            "model.rope_scaling.beta_fast and beta_slow must be positive, got "
                << r.beta_fast << " and " << r.beta_slow);
  DST_CHECK(r.original_max_position_embeddings >= 0, ConfigError,
            "model.rope_scaling.original_max_position_embeddings must not be negative");
}

}  // namespace

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
  if (is_deepseek()) {
    validate_mla(*this);
    validate_moe(*this);
    validate_rope_scaling(rope_scaling);
  } else {
    // Llama, and families registered by programs (model/model_family.h): a dense decoder.
    DST_CHECK(hidden_size % num_attention_heads == 0, ConfigError,
              "model.hidden_size (" << hidden_size
                                    << ") is not divisible by model.num_attention_heads ("
                                    << num_attention_heads << ")");
    DST_CHECK(head_dim() % 2 == 0, ConfigError,
              "model: head dimension hidden_size/num_attention_heads = "
                  << head_dim() << " must be even for RoPE");
    DST_CHECK(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
              ConfigError,
              "model.num_attention_heads (" << num_attention_heads
                                            << ") is not divisible by model.num_key_value_heads ("
                                            << num_key_value_heads << ")");
  }
  DST_CHECK(rms_norm_eps > 0, ConfigError, "model.rms_norm_eps must be positive");
  DST_CHECK(rope_theta > 0, ConfigError, "model.rope_theta must be positive");
  DST_CHECK(max_position_embeddings > 0, ConfigError,
            "model.max_position_embeddings must be positive");
  DST_CHECK(initializer_range > 0, ConfigError, "model.initializer_range must be positive");
}

namespace {

// Parameters of one layer's attention: Llama's q/k/v/o or DeepSeek's MLA.
int64_t attention_parameters(const ModelConfig& c) {
  const int64_t hidden = c.hidden_size, heads = c.num_attention_heads;
  if (!c.is_deepseek()) {
    const int64_t kv_dim = c.head_dim() * c.num_key_value_heads;
    return hidden * hidden * 2 + hidden * kv_dim * 2;
  }
  const int64_t q_out = heads * c.qk_head_dim();
  const int64_t q = c.q_lora_rank > 0
                        ? hidden * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * q_out
                        : hidden * q_out;
  const int64_t kv = hidden * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank +
                     c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim);
  return q + kv + heads * c.v_head_dim * hidden;
}

// Parameters of the feed-forward blocks of all layers, with `experts_used` routed experts per
// MoE layer.
int64_t feed_forward_parameters(const ModelConfig& c, int64_t experts_used) {
  int64_t total = 0;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    if (!c.is_moe_layer(layer)) {
      total += 3 * c.hidden_size * c.intermediate_size;
      continue;
    }
    const int64_t expert = 3 * c.hidden_size * c.moe_intermediate_size;
    total += c.n_routed_experts * c.hidden_size + (experts_used + c.n_shared_experts) * expert;
  }
  return total;
}

int64_t parameters_with(const ModelConfig& c, int64_t experts_used) {
  const int64_t per_layer = attention_parameters(c) + 2 * c.hidden_size;
  const int64_t embedding = c.vocab_size * c.hidden_size;
  const int64_t head = c.tie_word_embeddings ? 0 : c.vocab_size * c.hidden_size;
  return embedding + c.num_hidden_layers * per_layer + feed_forward_parameters(c, experts_used) +
         c.hidden_size + head;
}

}  // namespace

int64_t ModelConfig::num_parameters() const { return parameters_with(*this, n_routed_experts); }

int64_t ModelConfig::num_active_parameters() const {
  return parameters_with(*this, num_experts_per_tok);
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

namespace {

// The families whose config.json this reader knows: model_type and Hugging Face architecture.
struct KnownFamily {
  const char* model_type;
  const char* architecture;
};
constexpr KnownFamily kKnownFamilies[] = {{"llama", "LlamaForCausalLM"},
                                          {"deepseek_v2", "DeepseekV2ForCausalLM"},
                                          {"deepseek_v3", "DeepseekV3ForCausalLM"}};

// Llama's for a family registered by a program (model/model_family.h).
const char* architecture_of(const std::string& model_type) {
  for (const KnownFamily& family : kKnownFamilies)
    if (model_type == family.model_type) return family.architecture;
  return "LlamaForCausalLM";
}

// "llama (LlamaForCausalLM), ..." for error messages.
std::string describe_known_families() {
  std::string text;
  for (const KnownFamily& family : kKnownFamilies)
    text += (text.empty() ? "" : ", ") + std::string(family.model_type) + " (" +
            family.architecture + ")";
  return text;
}

nlohmann::json rope_scaling_json(const RopeScaling& r) {
  nlohmann::json json = {{"type", r.rope_type},
                         {"rope_type", r.rope_type},
                         {"factor", r.factor},
                         {"beta_fast", r.beta_fast},
                         {"beta_slow", r.beta_slow},
                         {"mscale", r.mscale},
                         {"mscale_all_dim", r.mscale_all_dim},
                         {"truncate", r.truncate}};
  if (r.original_max_position_embeddings > 0)
    json["original_max_position_embeddings"] = r.original_max_position_embeddings;
  if (r.attention_factor > 0) json["attention_factor"] = r.attention_factor;
  return json;
}

void add_deepseek_fields(const ModelConfig& c, nlohmann::json& json) {
  json["q_lora_rank"] = c.q_lora_rank > 0 ? nlohmann::json(c.q_lora_rank) : nlohmann::json();
  json["kv_lora_rank"] = c.kv_lora_rank;
  json["qk_nope_head_dim"] = c.qk_nope_head_dim;
  json["qk_rope_head_dim"] = c.qk_rope_head_dim;
  json["v_head_dim"] = c.v_head_dim;
  json["moe_intermediate_size"] = c.moe_intermediate_size;
  json["n_routed_experts"] = c.n_routed_experts;
  json["n_shared_experts"] = c.n_shared_experts;
  json["num_experts_per_tok"] = c.num_experts_per_tok;
  json["first_k_dense_replace"] = c.first_k_dense_replace;
  json["moe_layer_freq"] = 1;
  json["n_group"] = c.n_group;
  json["topk_group"] = c.topk_group;
  json["topk_method"] = c.topk_method;
  json["scoring_func"] = c.scoring_func;
  json["norm_topk_prob"] = c.norm_topk_prob;
  json["routed_scaling_factor"] = c.routed_scaling_factor;
  json["attention_bias"] = false;
  if (c.model_type == "deepseek_v3") json["rope_interleave"] = c.rope_interleave;
  if (!c.rope_scaling.is_default()) json["rope_scaling"] = rope_scaling_json(c.rope_scaling);
}

}  // namespace

std::string model_config_to_hf_json(const ModelConfig& c) {
  nlohmann::json json = {
      {"model_type", c.model_type},
      {"architectures", {architecture_of(c.model_type)}},
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
  if (c.is_deepseek()) add_deepseek_fields(c, json);
  return json.dump(2) + "\n";
}

namespace {

// The model family a config.json names: `model_type` (Hugging Face's key), else the first of
// `architectures`; a config naming neither (older files of ours) is read as Llama. A config of
// a family not implemented here is refused instead of loading as a wrong Llama.
std::string model_type_of(const nlohmann::json& json, const std::string& path) {
  auto type = json.find("model_type");
  if (type != json.end() && !type->is_null()) {
    DST_CHECK(type->is_string(), ConfigError,
              path << ": field 'model_type' has the wrong type (" << type->type_name() << ")");
    const std::string name = type->get<std::string>();
    for (const KnownFamily& family : kKnownFamilies)
      if (name == family.model_type) return name;
    DST_THROW(ConfigError, path << ": field 'model_type' is '" << name
                                << "', which no model family here implements (known: "
                                << describe_known_families() << ")");
  }
  auto architectures = json.find("architectures");
  if (architectures == json.end() || !architectures->is_array() || architectures->empty())
    return "llama";
  const nlohmann::json& first = architectures->front();
  for (const KnownFamily& family : kKnownFamilies)
    if (first.is_string() && first.get<std::string>() == family.architecture)
      return family.model_type;
  DST_THROW(ConfigError, path << ": field 'architectures' names " << first.dump()
                              << ", which no model family here implements (known: "
                              << describe_known_families() << ")");
}

bool is_set(const nlohmann::json& json, const char* key) {
  auto it = json.find(key);
  return it != json.end() && !it->is_null();
}

[[noreturn]] void refuse(const nlohmann::json& json, const std::string& path, const char* key,
                         const std::string& why) {
  DST_THROW(ConfigError, path << ": field '" << key << "' = " << json.at(key).dump() << " is not "
                              << "implemented (" << why << ")");
}

// Options both families' Hugging Face configs have that this implementation does not: set to
// anything but their plain value they would change the model, so they are refused by name.
void check_common_fields_implemented(const nlohmann::json& json, const std::string& path) {
  for (const char* key : {"attention_bias", "mlp_bias"})
    if (is_set(json, key) && json.at(key) != false)
      refuse(json, path, key, "projections have no bias");
  if (is_set(json, "hidden_act") && json.at("hidden_act") != "silu")
    refuse(json, path, "hidden_act", "the MLP is SwiGLU, i.e. silu");
  if (is_set(json, "attention_dropout") && json.at("attention_dropout") != 0)
    refuse(json, path, "attention_dropout", "no dropout");
}

void check_llama_fields_implemented(const nlohmann::json& json, const std::string& path,
                                    const ModelConfig& config) {
  if (is_set(json, "rope_scaling"))
    refuse(json, path, "rope_scaling", "only unscaled rotary embeddings for Llama");
  if (is_set(json, "rope_parameters")) {
    const nlohmann::json& rope = json.at("rope_parameters");
    const auto rope_type = rope.is_object() ? rope.find("rope_type") : rope.end();
    if (!rope.is_object() || (rope_type != rope.end() && *rope_type != "default"))
      refuse(json, path, "rope_parameters", "only rope_type 'default' for Llama");
  }
  if (is_set(json, "head_dim") && json.at("head_dim") != config.head_dim())
    refuse(json, path, "head_dim",
           "head_dim is hidden_size / num_attention_heads = " + std::to_string(config.head_dim()));
}

// rope_scaling (legacy, `type` or `rope_type`) or transformers v5's rope_parameters.
void read_rope_scaling(const nlohmann::json& json, const std::string& path, RopeScaling* out) {
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!is_set(json, key)) continue;
    const nlohmann::json& rope = json.at(key);
    DST_CHECK(rope.is_object(), ConfigError,
              path << ": field '" << key << "' has the wrong type (" << rope.type_name() << ")");
    const std::string where = path + ": " + key;
    read_field(rope, where, "type", &out->rope_type);
    read_field(rope, where, "rope_type", &out->rope_type);
    read_field(rope, where, "factor", &out->factor);
    read_field(rope, where, "original_max_position_embeddings",
               &out->original_max_position_embeddings);
    read_field(rope, where, "beta_fast", &out->beta_fast);
    read_field(rope, where, "beta_slow", &out->beta_slow);
    read_field(rope, where, "mscale", &out->mscale);
    read_field(rope, where, "mscale_all_dim", &out->mscale_all_dim);
    read_field(rope, where, "attention_factor", &out->attention_factor);
    read_field(rope, where, "truncate", &out->truncate);
  }
  // transformers reads `beta_fast or 32`, `beta_slow or 1`: 0 means the default.
  if (out->beta_fast == 0) out->beta_fast = 32.0;
  if (out->beta_slow == 0) out->beta_slow = 1.0;
}

// DeepSeek's fields, with DeepseekV2Config / DeepseekV3Config defaults for missing ones.
void read_deepseek_fields(const nlohmann::json& json, const std::string& path, ModelConfig* c) {
  const bool v3 = c->model_type == "deepseek_v3";
  c->rms_norm_eps = 1e-6;
  c->q_lora_rank = 1536;
  c->kv_lora_rank = 512;
  c->qk_nope_head_dim = 128;
  c->qk_rope_head_dim = 64;
  c->v_head_dim = 128;
  c->moe_intermediate_size = v3 ? 2048 : 1407;
  c->n_routed_experts = v3 ? 256 : 64;
  c->n_shared_experts = v3 ? 1 : 2;
  c->num_experts_per_tok = v3 ? 8 : 0;
  c->first_k_dense_replace = v3 ? 3 : 0;
  c->n_group = v3 ? 8 : 1;
  c->topk_group = v3 ? 4 : 1;
  c->topk_method = v3 ? "noaux_tc" : "greedy";
  c->scoring_func = v3 ? "sigmoid" : "softmax";
  c->norm_topk_prob = v3;
  c->routed_scaling_factor = v3 ? 2.5 : 1.0;
  c->rope_interleave = true;
  read_field(json, path, "rms_norm_eps", &c->rms_norm_eps);
  read_field(json, path, "q_lora_rank", &c->q_lora_rank);
  if (json.contains("q_lora_rank") && json.at("q_lora_rank").is_null()) c->q_lora_rank = 0;
  read_field(json, path, "kv_lora_rank", &c->kv_lora_rank);
  read_field(json, path, "qk_nope_head_dim", &c->qk_nope_head_dim);
  read_field(json, path, "qk_rope_head_dim", &c->qk_rope_head_dim);
  read_field(json, path, "v_head_dim", &c->v_head_dim);
  read_field(json, path, "moe_intermediate_size", &c->moe_intermediate_size);
  read_field(json, path, "n_routed_experts", &c->n_routed_experts);
  read_field(json, path, "n_shared_experts", &c->n_shared_experts);
  read_field(json, path, "num_experts_per_tok", &c->num_experts_per_tok);
  read_field(json, path, "first_k_dense_replace", &c->first_k_dense_replace);
  read_field(json, path, "n_group", &c->n_group);
  read_field(json, path, "topk_group", &c->topk_group);
  read_field(json, path, "topk_method", &c->topk_method);
  read_field(json, path, "scoring_func", &c->scoring_func);
  read_field(json, path, "norm_topk_prob", &c->norm_topk_prob);
  read_field(json, path, "routed_scaling_factor", &c->routed_scaling_factor);
  if (v3) read_field(json, path, "rope_interleave", &c->rope_interleave);
  read_rope_scaling(json, path, &c->rope_scaling);
  if (is_set(json, "moe_layer_freq") && json.at("moe_layer_freq") != 1)
    refuse(json, path, "moe_layer_freq",
           "every layer from first_k_dense_replace on is a MoE layer, as in transformers");
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
  config.model_type = model_type_of(json, path);
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
  if (config.is_deepseek()) read_deepseek_fields(json, path, &config);
  try {
    config.validate();
  } catch (const ConfigError& e) {
    DST_THROW(ConfigError, path << ": " << e.what());
  }
  check_common_fields_implemented(json, path);
  if (!config.is_deepseek()) check_llama_fields_implemented(json, path, config);
  return config;
}

void check_same_model(const ModelConfig& saved, const ModelConfig& ours,
                      const std::string& directory) {
  DST_CHECK(saved.model_type == ours.model_type, CheckpointError,
            directory << ": checkpoint of a different model: model.model_type is "
                      << saved.model_type << " there, " << ours.model_type << " in the recipe");
  const std::pair<const char*, std::pair<int64_t, int64_t>> fields[] = {
      {"vocab_size", {saved.vocab_size, ours.vocab_size}},
      {"hidden_size", {saved.hidden_size, ours.hidden_size}},
      {"intermediate_size", {saved.intermediate_size, ours.intermediate_size}},
      {"num_hidden_layers", {saved.num_hidden_layers, ours.num_hidden_layers}},
      {"num_attention_heads", {saved.num_attention_heads, ours.num_attention_heads}},
      {"num_key_value_heads", {saved.num_key_value_heads, ours.num_key_value_heads}},
      {"tie_word_embeddings", {saved.tie_word_embeddings, ours.tie_word_embeddings}},
      {"q_lora_rank", {saved.q_lora_rank, ours.q_lora_rank}},
      {"kv_lora_rank", {saved.kv_lora_rank, ours.kv_lora_rank}},
      {"qk_nope_head_dim", {saved.qk_nope_head_dim, ours.qk_nope_head_dim}},
      {"qk_rope_head_dim", {saved.qk_rope_head_dim, ours.qk_rope_head_dim}},
      {"v_head_dim", {saved.v_head_dim, ours.v_head_dim}},
      {"moe_intermediate_size", {saved.moe_intermediate_size, ours.moe_intermediate_size}},
      {"n_routed_experts", {saved.n_routed_experts, ours.n_routed_experts}},
      {"n_shared_experts", {saved.n_shared_experts, ours.n_shared_experts}},
      {"first_k_dense_replace", {saved.first_k_dense_replace, ours.first_k_dense_replace}},
  };
  for (const auto& [key, values] : fields)
    DST_CHECK(values.first == values.second, CheckpointError,
              directory << ": checkpoint of a different model: model." << key << " is "
                        << values.first << " there, " << values.second << " in the recipe");
}

}  // namespace dst

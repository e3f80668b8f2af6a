#include "deepseek_train/train/peft_import.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "deepseek_train/adapters/lora.h"
#include "deepseek_train/checkpoint/hf_interop.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/train/initial_weights.h"

namespace dst {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// PEFT's names of a LoRA model's tensors: the wrapper's prefix before the model's own names.
constexpr const char* kPeftPrefix = "base_model.model.";

json read_json(const std::string& path) {
  std::ifstream in(path);
  DST_CHECK(in.good(), ConfigError, path << ": cannot open (not a PEFT adapter folder)");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    DST_THROW(ConfigError, path << ": invalid JSON (" << e.what() << ")");
  }
}

std::string scalar_text(const json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

// Keys whose non-default values ask for something the LoRA adapter does not implement.
void check_unsupported(const json& config, const std::string& path) {
  auto is_default = [&config](const char* key) {
    if (!config.contains(key)) return true;
    const json& v = config[key];
    return v.is_null() || v == false || (v.is_object() && v.empty()) ||
           (v.is_array() && v.empty()) || v == "none";
  };
  for (const char* key :
       {"use_dora", "rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern",
        "modules_to_save", "bias", "fan_in_fan_out", "exclude_modules", "trainable_token_indices",
        "layer_replication", "lora_bias", "target_parameters", "use_qalora", "use_bdlora",
        "alora_invocation_tokens"})
    DST_CHECK(is_default(key), ConfigError,
              path << ": key '" << key << "' = " << config[key].dump()
                   << " is not supported (plain LoRA only)");
}

std::vector<std::string> sorted(std::vector<std::string> values) {
  std::sort(values.begin(), values.end());
  return values;
}

}  // namespace

AdapterConfig adapter_config_from_peft(const std::string& dir) {
  const std::string path = (fs::path(dir) / "adapter_config.json").string();
  const json config = read_json(path);
  DST_CHECK(config.is_object(), ConfigError, path << ": expected a JSON object");
  const std::string type = config.value("peft_type", std::string());
  DST_CHECK(type == "LORA", ConfigError,
            path << ": key 'peft_type' is '" << type << "'; only LORA adapters can be imported");
  check_unsupported(config, path);
  AdapterConfig adapter;
  adapter.type = "lora";
  adapter.where = path;
  for (const char* key : {"r", "lora_alpha", "lora_dropout", "use_rslora"})
    if (config.contains(key) && !config[key].is_null())
      adapter.scalars[key] = scalar_text(config[key]);
  DST_CHECK(config.contains("target_modules"), ConfigError,
            path << ": key 'target_modules' is missing");
  const json& targets = config["target_modules"];
  if (targets.is_string()) {
    adapter.scalars["target_modules"] = targets.get<std::string>();
  } else {
    DST_CHECK(targets.is_array(), ConfigError,
              path << ": key 'target_modules': expected a list or a regular expression");
    for (const json& t : targets) adapter.lists["target_modules"].push_back(scalar_text(t));
  }
  return adapter;
}

std::vector<AdapterConfig> adapters_with_peft_folder(
    const std::vector<AdapterConfig>& recipe_adapters, const std::string& dir) {
  AdapterConfig peft = adapter_config_from_peft(dir);
  if (recipe_adapters.empty()) return {peft};
  DST_CHECK(recipe_adapters.size() == 1 && recipe_adapters[0].type == "lora", ConfigError,
            recipe_adapters[0].where << ": train.init_adapter (" << dir
                                     << ") continues one LoRA adapter; the recipe lists "
                                     << recipe_adapters.size() << " adapter(s) of type '"
                                     << recipe_adapters[0].type << "'");
  const AdapterConfig& recipe = recipe_adapters[0];
  const LoraOptions ours = LoraOptions::from_config(recipe);
  const LoraOptions theirs = LoraOptions::from_config(peft);
  auto check = [&](bool same, const char* key, const std::string& a, const std::string& b) {
    DST_CHECK(
        same, ConfigError,
        recipe.where << "." << key << ": " << a << " differs from " << peft.where << "'s " << b);
  };
  check(ours.r == theirs.r, "r", std::to_string(ours.r), std::to_string(theirs.r));
  check(ours.alpha == theirs.alpha, "alpha", std::to_string(ours.alpha),
        std::to_string(theirs.alpha));
  check(ours.use_rslora == theirs.use_rslora, "use_rslora", ours.use_rslora ? "true" : "false",
        theirs.use_rslora ? "true" : "false");
  check(sorted(ours.target_modules) == sorted(theirs.target_modules) &&
            ours.target_regex == theirs.target_regex,
        "target_modules", "the recipe's modules", "target_modules");
  return recipe_adapters;
}

void import_peft_weights(CausalLM& model, const std::string& dir) {
  const std::string path = (fs::path(dir) / "adapter_model.safetensors").string();
  DST_CHECK(fs::exists(path), CheckpointError, path << ": missing (a PEFT adapter's weights)");
  const SafetensorsTensors tensors(path, {path});
  std::vector<std::string> names = tensors.names();
  std::set<std::string> unused(names.begin(), names.end());
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    if (name.find(".lora_A.") == std::string::npos && name.find(".lora_B.") == std::string::npos)
      continue;
    const std::string key = kPeftPrefix + name;
    DST_CHECK(
        tensors.has(key), CheckpointError,
        path << ": no tensor '" << key << "' for the model's LoRA parameter '" << name << "'");
    const std::vector<int64_t> expected = model.full_shape(name, item.value());
    DST_CHECK(tensors.shape(key) == expected, CheckpointError,
              path << ": tensor '" << key << "' has shape " << at::IntArrayRef(tensors.shape(key))
                   << ", the model expects " << at::IntArrayRef(expected));
    copy_rank_slice(model, name, item.value(), tensors, key);
    unused.erase(key);
  }
  DST_CHECK(unused.empty(), CheckpointError,
            path << ": tensor '" << *unused.begin()
                 << "' matches no LoRA parameter of the model (target_modules?)");
}

}  // namespace dst

#include "deepseek_train/model/model_family.h"

#include "deepseek_train/core/error.h"
#include "deepseek_train/model/deepseek.h"
#include "deepseek_train/model/llama.h"

namespace dst {

namespace {

ModelFamily llama_family() {
  ModelFamily family;
  family.model_type = "llama";
  family.architectures = {"LlamaForCausalLM"};
  family.build = [](const ModelConfig& config, ModelShardSpec shard) -> std::shared_ptr<CausalLM> {
    return std::make_shared<LlamaModelImpl>(config, std::move(shard));
  };
  return family;
}

ModelFamily deepseek_family(const std::string& model_type, const std::string& architecture) {
  ModelFamily family;
  family.model_type = model_type;
  family.architectures = {architecture};
  family.build = [](const ModelConfig& config, ModelShardSpec shard) -> std::shared_ptr<CausalLM> {
    return std::make_shared<DeepseekModelImpl>(config, std::move(shard));
  };
  return family;
}

}  // namespace

ModelFamilyRegistry::ModelFamilyRegistry() {
  add(llama_family());
  add(deepseek_family("deepseek_v2", "DeepseekV2ForCausalLM"));
  add(deepseek_family("deepseek_v3", "DeepseekV3ForCausalLM"));
}

void ModelFamilyRegistry::add(ModelFamily family) {
  DST_CHECK(!family.model_type.empty() && family.build, ConfigError,
            "model family '" << family.model_type << "' needs a model_type and a build function");
  DST_CHECK(families_.count(family.model_type) == 0, ConfigError,
            "model family '" << family.model_type << "' is already registered");
  std::string key = family.model_type;
  families_.emplace(std::move(key), std::move(family));
}

std::string ModelFamilyRegistry::describe() const {
  std::string text;
  for (const auto& [type, family] : families_) {
    if (!text.empty()) text += ", ";
    text += type;
    if (family.architectures.empty()) continue;
    text += " (";
    for (size_t i = 0; i < family.architectures.size(); ++i)
      text += (i ? ", " : "") + family.architectures[i];
    text += ")";
  }
  return text;
}

const ModelFamily& ModelFamilyRegistry::find(const std::string& model_type) const {
  auto found = families_.find(model_type);
  DST_CHECK(found != families_.end(), ConfigError,
            "model family '" << model_type << "' is not registered (known: " << describe() << ")");
  return found->second;
}

std::shared_ptr<CausalLM> ModelFamilyRegistry::build(const ModelConfig& config,
                                                     ModelShardSpec shard) const {
  const int tp = shard.tp_group ? shard.tp_group->size() : 1;
  std::shared_ptr<CausalLM> model = find(config.model_type).build(config, std::move(shard));
  // A family that forgot record_tp_splits would train a replicated model under tp, silently.
  DST_CHECK(tp == 1 || model->splits_any_parameter(), ConfigError,
            "model family '" << config.model_type
                             << "' splits no parameter across parallel.tp=" << tp
                             << " (build it from tensor_parallel/parallel_layers.h and call "
                                "record_tp_splits(), or train with tp 1)");
  return model;
}

}  // namespace dst

// The adapter registry and the freeze-then-apply step.
#include "deepseek_train/adapters/adapter.h"

#include <sstream>

#include "deepseek_train/adapters/lora.h"
#include "deepseek_train/adapters/prefix_tuning.h"
#include "deepseek_train/core/error.h"

namespace dst {

PeftAdapterFiles Adapter::peft_files(const std::map<std::string, at::Tensor>& /*full*/,
                                     const ModelConfig& /*config*/) const {
  DST_THROW(ConfigError, "adapter type '" << type() << "' has no PEFT export format");
}

bool Adapter::merge_into(std::map<std::string, at::Tensor>& /*full*/) const { return false; }

AdapterRegistry::AdapterRegistry() {
  add("lora", [](const AdapterConfig& c) { return std::make_unique<LoraAdapter>(c); });
  add("prefix", [](const AdapterConfig& c) { return std::make_unique<PrefixTuningAdapter>(c); });
}

void AdapterRegistry::add(const std::string& type, AdapterFactory factory) {
  DST_CHECK(!type.empty() && factory, ConfigError, "adapter registry: empty type or factory");
  DST_CHECK(!has(type), ConfigError, "adapter type '" << type << "' is already registered");
  factories_.emplace(type, std::move(factory));
}

std::vector<std::string> AdapterRegistry::types() const {
  std::vector<std::string> names;
  for (const auto& item : factories_) names.push_back(item.first);
  return names;
}

std::unique_ptr<Adapter> AdapterRegistry::create(const AdapterConfig& config) const {
  auto found = factories_.find(config.type);
  if (found == factories_.end()) {
    std::ostringstream known;
    for (const std::string& name : types()) known << (known.tellp() > 0 ? ", " : "") << name;
    DST_THROW(ConfigError, config.where << ".type: unknown adapter type '" << config.type
                                        << "' (registered: " << known.str() << ")");
  }
  return found->second(config);
}

std::vector<std::unique_ptr<Adapter>> apply_adapters(CausalLM& model,
                                                     const std::vector<AdapterConfig>& configs,
                                                     const AdapterRegistry& registry,
                                                     uint64_t seed) {
  std::vector<std::unique_ptr<Adapter>> adapters;
  if (configs.empty()) return adapters;
  for (auto& parameter : model.parameters()) parameter.set_requires_grad(false);
  for (const AdapterConfig& config : configs) {
    adapters.push_back(registry.create(config));
    adapters.back()->apply(model, seed);
  }
  return adapters;
}

}  // namespace dst

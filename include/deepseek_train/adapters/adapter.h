// Adapters: model transforms for parameter-efficient fine-tuning. The trainer freezes the base
// model, then lets each adapter of the recipe add (or unfreeze) the parameters that train; only
// those get gradients, optimizer state and gradient communication. Types are created by name from
// an AdapterRegistry; a program linking the library registers its own (examples/custom_adapter).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "deepseek_train/adapters/adapter_config.h"
#include "deepseek_train/model/causal_lm.h"

namespace dst {

// An adapter in PEFT's format: adapter_model.safetensors's tensors (PEFT key names) and
// adapter_config.json's text. Files are written by the caller (checkpoint/hf_interop.h).
struct PeftAdapterFiles {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::string config_json;
};

class Adapter {
 public:
  virtual ~Adapter() = default;
  virtual std::string type() const = 0;
  // Adds this adapter's trainable parameters to `model` (whose base parameters are frozen),
  // initialised from `seed` identically in every layout (full tensor drawn, rank's slice kept).
  // Parameters split across tp are declared with model.set_tp_split. Throws ConfigError naming
  // the recipe entry when it does not fit the model.
  virtual void apply(CausalLM& model, uint64_t seed) = 0;
  // The adapter in PEFT's format, from the full (tp-gathered) tensors of the whole model.
  // Default: ConfigError (the type has no PEFT format).
  virtual PeftAdapterFiles peft_files(const std::map<std::string, at::Tensor>& full,
                                      const ModelConfig& config) const;
  // Folds the adapter into the base weights of a full state dict and removes its tensors
  // (LoRA: W += scaling * B A). Returns false (state untouched) when the type cannot be merged.
  virtual bool merge_into(std::map<std::string, at::Tensor>& full) const;
};

using AdapterFactory = std::function<std::unique_ptr<Adapter>(const AdapterConfig&)>;

class AdapterRegistry {
 public:
  // With the built-in types: "lora" (lora.h) and "prefix" (prefix_tuning.h).
  AdapterRegistry();
  // ConfigError when `type` is already registered.
  void add(const std::string& type, AdapterFactory factory);
  bool has(const std::string& type) const { return factories_.count(type) > 0; }
  std::vector<std::string> types() const;
  // ConfigError naming config.where and the known types when the type is unknown.
  std::unique_ptr<Adapter> create(const AdapterConfig& config) const;

 private:
  std::map<std::string, AdapterFactory> factories_;
};

// Freezes every parameter of `model`, then applies each adapter in order. Returns the adapters.
std::vector<std::unique_ptr<Adapter>> apply_adapters(CausalLM& model,
                                                     const std::vector<AdapterConfig>& configs,
                                                     const AdapterRegistry& registry,
                                                     uint64_t seed);

}  // namespace dst

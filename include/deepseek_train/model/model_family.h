// Model families: what a model architecture registers so the trainer can build it (torchtitan's
// TrainSpec). A family is keyed by the Hugging Face `model_type` of its config.json (and the
// `architectures` names it answers to) and builds its CausalLM (causal_lm.h) for a rank's part of
// the model. The trainer, pipeline executor, adapters, checkpoints and the memory plan then see
// only the CausalLM.
//
// The registry is a value, not a global: the built-in families come with a default-constructed
// one, and a program (or a test) adds its own family to a registry it passes to the Trainer.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "deepseek_train/model/causal_lm.h"
#include "deepseek_train/model/model_config.h"

namespace dst {

struct ModelFamily {
  std::string model_type;                  // Hugging Face config.json `model_type`: "llama"
  std::vector<std::string> architectures;  // config.json `architectures`: "LlamaForCausalLM"
  // Builds this rank's part of the model (ModelShardSpec: tp group, pipeline chunks, activation
  // checkpointing, kernels). Parameters may hold anything: the trainer initialises them.
  std::function<std::shared_ptr<CausalLM>(const ModelConfig&, ModelShardSpec)> build;
};

class ModelFamilyRegistry {
 public:
  // With the built-in families: llama (model/llama.h), deepseek_v2 and deepseek_v3
  // (model/deepseek.h).
  ModelFamilyRegistry();
  // ConfigError when a family of that model_type is already registered or the family is
  // incomplete.
  void add(ModelFamily family);
  // ConfigError naming the model_type and the known ones when none is registered.
  const ModelFamily& find(const std::string& model_type) const;
  // "llama (LlamaForCausalLM), ..." for error messages.
  std::string describe() const;
  // Builds the family's model for `config.model_type`.
  std::shared_ptr<CausalLM> build(const ModelConfig& config, ModelShardSpec shard) const;

 private:
  std::map<std::string, ModelFamily> families_;
};

}  // namespace dst

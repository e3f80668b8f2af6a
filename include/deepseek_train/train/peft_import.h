// PEFT adapter folders (adapter_config.json + adapter_model.safetensors, as PEFT's
// save_pretrained writes them) as a starting point: `train.init_adapter` continues fine-tuning
// from one, `dstrain eval --adapter` evaluates a base model with one. LoRA adapters are read;
// the recipe entry comes from the folder's adapter_config.json (or must agree with it), and the
// weights go into this rank's slices of the adapter's parameters.
#pragma once

#include <string>
#include <vector>

#include "deepseek_train/adapters/adapter_config.h"
#include "deepseek_train/model/causal_lm.h"

namespace dst {

// The recipe entry a PEFT folder describes. ConfigError naming <dir>/adapter_config.json and the
// key for a missing file, bad JSON, an adapter type other than LORA, or options this library
// does not implement (DoRA, per-layer rank/alpha patterns, trained biases, modules_to_save...).
AdapterConfig adapter_config_from_peft(const std::string& dir);

// The adapters to apply for `recipe_adapters` and the PEFT folder `dir`: the folder's entry when
// the recipe lists none, else the recipe's single entry after checking that its type, r, alpha
// and target_modules agree with the folder's (ConfigError naming both on a difference).
std::vector<AdapterConfig> adapters_with_peft_folder(
    const std::vector<AdapterConfig>& recipe_adapters, const std::string& dir);

// Loads <dir>/adapter_model.safetensors into the model's LoRA parameters (this rank's tp slices).
// CheckpointError naming the file and tensor when one of them has no tensor in the file, a
// shape differs, or the file holds a tensor that matches no parameter.
void import_peft_weights(CausalLM& model, const std::string& dir);

}  // namespace dst

// YAML recipes: the only module that knows YAML. A recipe maps onto TrainConfig section by
// section (model, parallel, optim, schedule, data, train, comm). Unknown keys, wrong types and
// malformed YAML are ConfigErrors whose one-line message names the file, the line and the key.
// Overrides "a.b.c=value" (from the command line) are applied on top of the file.
#pragma once

#include <string>
#include <vector>

#include "deepseek_train/train/train_config.h"

namespace dst {

// Loads `path` and applies `overrides` in order. Runs TrainConfig::validate().
TrainConfig load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});

// Same, from YAML text; `source_name` is used in error messages in place of a file name.
TrainConfig parse_recipe(const std::string& yaml_text, const std::string& source_name,
                         const std::vector<std::string>& overrides = {});

// The fully resolved recipe (every key, defaults included) as YAML that parse_recipe accepts.
std::string recipe_to_yaml(const TrainConfig& config);

}  // namespace dst

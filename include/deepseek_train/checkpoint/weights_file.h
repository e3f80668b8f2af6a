// Single-file model weights in HDF5: one dataset per parameter, named by its Hugging Face name,
// written atomically (temporary file, flush, rename), so a crash never leaves a half-written
// file under the final name. Sharded, reshardable checkpoints build on top of this later.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/model/model_config.h"

namespace dst {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes float32/float64/int32/int64 CPU tensors (others are converted to float32).
// Throws CheckpointError naming the file on failure; the destination is then untouched.
void save_weights_file(const std::string& path, const NamedTensors& tensors);

// Reads every dataset of a file written by save_weights_file. Throws CheckpointError naming the
// file (and dataset) when it is missing, unreadable or not a weights file.
std::map<std::string, at::Tensor> load_weights_file(const std::string& path);

// Copies `weights` into `parameters` by name; every parameter must be present with the same shape
// (CheckpointError naming `source` and the tensor otherwise). Extra entries are an error too.
void assign_weights(const NamedTensors& parameters,
                    const std::map<std::string, at::Tensor>& weights, const std::string& source);

// Writes a Hugging Face style config.json for the model (atomically).
void save_hf_config_json(const std::string& path, const ModelConfig& config);

}  // namespace dst

#include "deepseek_train/train/provenance.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "deepseek_train/core/build_info.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/core/sha256.h"
#include "deepseek_train/version.h"

namespace dst {

namespace fs = std::filesystem;

namespace {

void add_file(std::vector<ProvenanceInput>& inputs, const std::string& role,
              const std::string& path) {
  inputs.push_back({role, path, sha256_file_hex(path), static_cast<int64_t>(fs::file_size(path))});
}

// A file, or every regular file of a folder in name order.
void add_path(std::vector<ProvenanceInput>& inputs, const std::string& role,
              const std::string& path) {
  if (path.empty()) return;
  if (!fs::is_directory(path)) {
    add_file(inputs, role, path);
    return;
  }
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(path))
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  for (const std::string& file : files) add_file(inputs, role, file);
}

}  // namespace

std::string Provenance::to_json() const {
  nlohmann::json files = nlohmann::json::array();
  for (const ProvenanceInput& input : inputs)
    files.push_back({{"role", input.role},
                     {"path", input.path},
                     {"sha256", input.sha256},
                     {"bytes", input.bytes}});
  nlohmann::json json{{"library_version", library_version},
                      {"source_commit", source_commit},
                      {"recipe", recipe},
                      {"inputs", files}};
  if (privacy) {
    nlohmann::json history = nlohmann::json::array();
    for (const PrivacySegment& segment : privacy->history)
      history.push_back({{"noise_multiplier", segment.noise_multiplier},
                         {"sample_rate", segment.sample_rate},
                         {"steps", segment.steps}});
    json["privacy"] = {{"max_grad_norm", privacy->max_grad_norm},
                       {"noise_multiplier", privacy->noise_multiplier},
                       {"sample_rate", privacy->sample_rate},
                       {"sampling", privacy->sampling},
                       {"accountant", privacy->accountant},
                       {"steps", privacy->steps},
                       {"epsilon", privacy->epsilon},
                       {"delta", privacy->delta},
                       {"history", history}};
  }
  return json.dump();
}

Provenance collect_provenance(const TrainConfig& config, const std::string& recipe_text) {
  Provenance provenance;
  provenance.library_version = kVersion;
  provenance.source_commit = build_info().source_commit;
  provenance.recipe = recipe_text;
  const DataOptions& data = config.data;
  if (!data.prepared.empty()) {
    add_path(provenance.inputs, "prepared", data.prepared);
  } else {
    add_path(provenance.inputs, "train_data", data.train_path);
    add_path(provenance.inputs, "validation_data", data.val_path);
  }
  if (data.tokenizer != "byte") add_path(provenance.inputs, "tokenizer", data.tokenizer);
  add_path(provenance.inputs, "init_from", config.train.init_from);
  add_path(provenance.inputs, "init_adapter", config.train.init_adapter);
  return provenance;
}

std::optional<PrivacyProvenance> privacy_of_provenance(const std::string& provenance_json,
                                                       const std::string& source) {
  if (provenance_json.empty()) return std::nullopt;
  try {
    const nlohmann::json root = nlohmann::json::parse(provenance_json);
    if (!root.contains("privacy")) return std::nullopt;
    const nlohmann::json& p = root.at("privacy");
    PrivacyProvenance out;
    out.max_grad_norm = p.at("max_grad_norm").get<double>();
    out.noise_multiplier = p.at("noise_multiplier").get<double>();
    out.sample_rate = p.at("sample_rate").get<double>();
    out.sampling = p.at("sampling").get<std::string>();
    out.accountant = p.at("accountant").get<std::string>();
    out.steps = p.at("steps").get<int64_t>();
    out.epsilon = p.at("epsilon").get<double>();
    out.delta = p.at("delta").get<double>();
    for (const nlohmann::json& segment : p.at("history"))
      out.history.push_back({segment.at("noise_multiplier").get<double>(),
                             segment.at("sample_rate").get<double>(),
                             segment.at("steps").get<int64_t>()});
    return out;
  } catch (const nlohmann::json::exception& e) {
    DST_THROW(CheckpointError, source << ": malformed privacy provenance (" << e.what() << ")");
  }
}

}  // namespace dst

// What a trained model was made from, for an auditor: the library (version, source commit), the
// resolved recipe, and the SHA-256 of every input file the run read — the text corpus or the
// prepared corpus (its manifest and every shard), the tokenizer, the initial weights
// (train.init_from) and the initial adapter (train.init_adapter). Every checkpoint manifest
// records it ("provenance"), and `dstrain ckpt convert` writes it beside the export
// (provenance.json; GGUF: the metadata key deepseek_train.provenance).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "deepseek_train/train/train_config.h"

namespace dst {

struct ProvenanceInput {
  std::string role;  // train_data, validation_data, prepared, tokenizer, init_from, init_adapter
  std::string path;
  std::string sha256;
  int64_t bytes = 0;
};

// A DP-SGD run's privacy: how it was trained and the budget spent by the step saved.
struct PrivacyProvenance {
  double max_grad_norm = 0.0;
  double noise_multiplier = 0.0;
  double sample_rate = 0.0;
  std::string sampling;
  std::string accountant;
  int64_t steps = 0;
  double epsilon = 0.0;
  double delta = 0.0;
  std::vector<PrivacySegment> history;  // every step so far (resumes included)
};

// The privacy block of a provenance JSON (a checkpoint manifest's), or nullopt when it has none.
// CheckpointError naming `source` when it is malformed.
std::optional<PrivacyProvenance> privacy_of_provenance(const std::string& provenance_json,
                                                       const std::string& source);

struct Provenance {
  std::string library_version;
  std::string source_commit;
  std::string recipe;
  std::vector<ProvenanceInput> inputs;
  std::optional<PrivacyProvenance> privacy;  // DP-SGD runs only

  std::string to_json() const;  // one JSON object
};

// Hashes every input file `config` names (a folder's regular files in name order). IoError
// naming the file when one cannot be read.
Provenance collect_provenance(const TrainConfig& config, const std::string& recipe_text);

}  // namespace dst

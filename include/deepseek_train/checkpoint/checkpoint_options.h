// Recipe options of training checkpoints (`checkpoint.*`): cadence, retention, background
// writing and encryption at rest. Torch-free.
#pragma once

#include <cstdint>
#include <string>

namespace dst {

struct CheckpointEncryptionOptions {
  std::string key_file;  // checkpoint.encryption.key_file: 32 raw bytes or 64 hex characters
  std::string key_env;   // checkpoint.encryption.key_env: name of a variable holding 64 hex chars
  bool enabled() const { return !key_file.empty() || !key_env.empty(); }
};

struct CheckpointOptions {
  int64_t every_steps = 0;  // checkpoint.every_steps: 0 = only at the end of training
  int64_t keep_last = 0;    // checkpoint.keep_last: committed checkpoints kept (0 = all)
  bool async = false;       // checkpoint.async: write in a background thread
  bool at_end = true;       // checkpoint.at_end: save after the last step
  // checkpoint.keep_best: save a checkpoint whenever the validation loss improves and keep the
  // best one (named by <root>/best) whatever keep_last says.
  bool keep_best = false;
  CheckpointEncryptionOptions encryption;

  // Throws ConfigError naming the key.
  void validate() const;
};

}  // namespace dst

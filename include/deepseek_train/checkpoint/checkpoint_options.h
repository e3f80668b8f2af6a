// Recipe options of training checkpoints (`checkpoint.*`): cadence, retention, background
// writing and encryption at rest. Torch-free.
#pragma once

#include <cstdint>
#include <string>

#include "deepseek_train/core/crypto.h"

namespace dst {

// checkpoint.encryption.{key_file, key_env} (core/crypto.h).
using CheckpointEncryptionOptions = EncryptionKeySource;

struct CheckpointOptions {
  int64_t every_steps = 0;  // checkpoint.every_steps: 0 = only at the end of training
  int64_t keep_last = 0;    // checkpoint.keep_last: committed checkpoints kept (0 = all)
  bool async = false;       // checkpoint.async: write in a background thread
  bool at_end = true;       // checkpoint.at_end: save after the last step
  // checkpoint.keep_best: save a checkpoint whenever the validation loss improves and keep the
  // best one (named by <root>/best) whatever keep_last says.
  bool keep_best = false;
  CheckpointEncryptionOptions encryption;
  // checkpoint.encrypt_exports: the end-of-run exports (model.h5 + config.json, the PEFT adapter,
  // the merged model) sealed file by file with the checkpoint key (checkpoint/encrypted_folder.h;
  // dstrain eval/generate read them with --key-file). Off: plaintext, as transformers needs.
  bool encrypt_exports = false;

  // Throws ConfigError naming the key.
  void validate() const;
};

}  // namespace dst

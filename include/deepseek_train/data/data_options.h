// Options of the data pipeline used by training (torch-free, filled by the recipe module).
#pragma once

#include <cstdint>
#include <string>

#include "deepseek_train/core/crypto.h"

namespace dst {

struct DataOptions {
  // Text corpus: one document per line (UTF-8). `dstrain train` needs it or `prepared`.
  std::string train_path;
  // Optional held-out corpus; when empty, the last `val_fraction` of train_path's documents.
  std::string val_path;
  double val_fraction = 0.05;
  int64_t seq_len = 128;
  // "byte" or the path of a Hugging Face tokenizer.json (data/tokenizer.h).
  std::string tokenizer = "byte";
  // The tokenizer's end-of-document token when its file does not make it clear.
  std::string eos_token;
  // A folder written by `dstrain prepare` (train-*.h5, validation-*.h5, manifest.json): used
  // instead of train_path/val_path when set.
  std::string prepared;
  // The key of an encrypted prepared corpus (data.encryption.key_file / key_env; the key
  // prepare.encryption wrote it with). Shards are decrypted in memory only.
  EncryptionKeySource encryption;
};

}  // namespace dst

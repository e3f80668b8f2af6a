// Options of the data pipeline used by training (torch-free, filled by the recipe module).
#pragma once

#include <cstdint>
#include <string>

namespace dst {

struct DataOptions {
  // Text corpus: one document per line (UTF-8). Required for `dstrain train`.
  std::string train_path;
  // Optional held-out corpus; when empty, the last `val_fraction` of train_path's documents.
  std::string val_path;
  double val_fraction = 0.05;
  int64_t seq_len = 128;
  std::string tokenizer = "byte";  // only the byte-level tokenizer exists so far
};

}  // namespace dst

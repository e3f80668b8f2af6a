// A dataset of fixed-length training sequences, whatever its source: packed in memory from a text
// corpus (TokenDataset) or read from prepared HDF5 shards (PreparedDataset). Torch-free: batches
// are plain int64 vectors the trainer turns into tensors.
#pragma once

#include <cstdint>
#include <vector>

namespace dst {

// Row-major [rows x seq_len] token ids and labels (label -100 = ignored).
struct TokenBatch {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;
};

class SequenceDataset {
 public:
  virtual ~SequenceDataset() = default;
  virtual int64_t size() const = 0;     // number of sequences
  virtual int64_t seq_len() const = 0;  // tokens per input row
  // Gathers the given sequence indices into a batch (indices may repeat). Throws DataError for
  // an index out of range.
  virtual TokenBatch batch(const std::vector<int64_t>& indices) const = 0;
};

}  // namespace dst

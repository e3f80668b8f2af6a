// A packed token dataset: documents are tokenized, joined with EOS and cut into fixed-length
// training sequences of seq_len + 1 tokens (inputs are the first seq_len, labels the last seq_len).
// Torch-free: batches are plain int64 vectors the trainer turns into tensors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "deepseek_train/data/sequence_dataset.h"
#include "deepseek_train/data/tokenizer.h"

namespace dst {

class TokenDataset final : public SequenceDataset {
 public:
  // Packs `documents` (tokenized with `tokenizer`, EOS after each) into sequences of
  // seq_len + 1 tokens; the incomplete tail is dropped. Throws DataError when no sequence fits,
  // naming `source` (a file name) in the message.
  TokenDataset(const std::vector<std::string>& documents, const Tokenizer& tokenizer,
               int64_t seq_len, const std::string& source);

  int64_t size() const override { return num_sequences_; }
  int64_t seq_len() const override { return seq_len_; }
  int64_t num_tokens() const { return num_sequences_ * seq_len_; }

  // Gathers the given sequence indices into a batch (indices may repeat).
  TokenBatch batch(const std::vector<int64_t>& indices) const override;

 private:
  int64_t seq_len_;
  int64_t num_sequences_;
  std::vector<int32_t> tokens_;  // num_sequences_ * (seq_len_ + 1)
};

// Splits documents into (train, validation): the last ceil(val_fraction * n) documents go to
// validation (at least one when val_fraction > 0 and n > 1).
void split_documents(const std::vector<std::string>& documents, double val_fraction,
                     std::vector<std::string>* train, std::vector<std::string>* validation);

}  // namespace dst

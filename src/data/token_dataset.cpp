// Packed fixed-length token sequences over a document list, and the train/validation split.
#include "deepseek_train/data/token_dataset.h"

#include <cmath>

#include "deepseek_train/core/error.h"

namespace dst {

TokenDataset::TokenDataset(const std::vector<std::string>& documents, const Tokenizer& tokenizer,
                           int64_t seq_len, const std::string& source)
    : seq_len_(seq_len), num_sequences_(0) {
  DST_CHECK(seq_len > 0, DataError,
            "dataset '" << source << "': seq_len must be positive, got " << seq_len);
  DST_CHECK(tokenizer.eos_id() >= 0, DataError,
            "dataset '" << source << "': tokenizer " << tokenizer.describe()
                        << " has no end-of-document token (set data.eos_token)");
  for (const std::string& doc : documents) {
    const std::vector<int32_t> ids = tokenizer.encode(doc);
    tokens_.insert(tokens_.end(), ids.begin(), ids.end());
    tokens_.push_back(tokenizer.eos_id());
  }
  const int64_t total = static_cast<int64_t>(tokens_.size());
  num_sequences_ = total / (seq_len + 1);
  DST_CHECK(num_sequences_ > 0, DataError,
            "dataset '" << source << "' is too small: " << total << " tokens (with EOS) from "
                        << documents.size() << " documents cannot fill one sequence of seq_len "
                        << seq_len << " + 1 tokens");
  tokens_.resize(static_cast<size_t>(num_sequences_ * (seq_len + 1)));
  tokens_.shrink_to_fit();
}

TokenBatch TokenDataset::batch(const std::vector<int64_t>& indices) const {
  TokenBatch out;
  out.rows = static_cast<int64_t>(indices.size());
  out.seq_len = seq_len_;
  out.input_ids.reserve(indices.size() * static_cast<size_t>(seq_len_));
  out.labels.reserve(indices.size() * static_cast<size_t>(seq_len_));
  for (int64_t index : indices) {
    DST_CHECK(index >= 0 && index < num_sequences_, DataError,
              "dataset index " << index << " out of range [0, " << num_sequences_ << ")");
    const int32_t* chunk = tokens_.data() + index * (seq_len_ + 1);
    out.input_ids.insert(out.input_ids.end(), chunk, chunk + seq_len_);
    out.labels.insert(out.labels.end(), chunk + 1, chunk + seq_len_ + 1);
  }
  return out;
}

void split_documents(const std::vector<std::string>& documents, double val_fraction,
                     std::vector<std::string>* train, std::vector<std::string>* validation) {
  DST_CHECK(train != nullptr && validation != nullptr, DataError,
            "split_documents: output vectors must not be null");
  DST_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, DataError,
            "split_documents: val_fraction must be in [0, 1), got " << val_fraction);
  const int64_t n = static_cast<int64_t>(documents.size());
  // ceil with a small tolerance so that e.g. 0.07 * 100 gives 7, not 8.
  int64_t num_val = static_cast<int64_t>(std::ceil(val_fraction * static_cast<double>(n) - 1e-9));
  if (val_fraction > 0.0 && n > 1 && num_val < 1) num_val = 1;
  if (num_val > n - 1) num_val = n > 0 ? n - 1 : 0;  // keep at least one training document
  train->assign(documents.begin(), documents.end() - num_val);
  validation->assign(documents.end() - num_val, documents.end());
}

}  // namespace dst

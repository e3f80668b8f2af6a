#include "deepseek_train/train/training_data.h"

#include <torch/torch.h>

#include <string>
#include <utility>

#include "deepseek_train/core/error.h"
#include "deepseek_train/data/prepared_dataset.h"
#include "deepseek_train/data/synthetic_corpus.h"
#include "deepseek_train/data/token_dataset.h"
#include "deepseek_train/data/tokenizer.h"
#include "deepseek_train/model/causal_lm.h"

namespace dst {

namespace {

// Shards written by `dstrain prepare`: their manifest must fit the model and the recipe.
TrainingData load_prepared(const DataOptions& data, int64_t model_vocab_size) {
  const std::optional<EncryptionKey> key = load_encryption_key(data.encryption);
  const EncryptionKey* key_ptr = key ? &*key : nullptr;
  const PreparedManifest manifest = read_prepared_manifest(data.prepared, key_ptr);
  DST_CHECK(manifest.vocab_size <= model_vocab_size, ConfigError,
            data.prepared << ": the corpus was tokenized into " << manifest.vocab_size
                          << " ids, more than model.vocab_size " << model_vocab_size);
  DST_CHECK(manifest.seq_len == data.seq_len, ConfigError,
            data.prepared << ": prepared with seq_len " << manifest.seq_len
                          << ", the recipe's data.seq_len is " << data.seq_len);
  return {std::make_unique<PreparedDataset>(data.prepared, "train", "", key_ptr),
          std::make_unique<PreparedDataset>(data.prepared, "validation", "", key_ptr)};
}

// A text corpus tokenised now, its validation documents split off or read from data.val_path.
TrainingData load_text(const DataOptions& data, int64_t model_vocab_size) {
  DST_CHECK(!data.train_path.empty(), ConfigError,
            "data.train_path or data.prepared is required for a training run");
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(data.tokenizer, data.eos_token);
  DST_CHECK(tokenizer->vocab_size() <= model_vocab_size, ConfigError,
            "data.tokenizer " << tokenizer->describe() << " has more ids than model.vocab_size "
                              << model_vocab_size);
  std::vector<std::string> train_docs, val_docs;
  std::vector<std::string> documents = read_text_corpus(data.train_path);
  if (data.val_path.empty()) {
    split_documents(documents, data.val_fraction, &train_docs, &val_docs);
  } else {
    train_docs = std::move(documents);
    val_docs = read_text_corpus(data.val_path);
  }
  const std::string val_source =
      data.val_path.empty() ? data.train_path + " (validation split)" : data.val_path;
  DST_CHECK(
      !val_docs.empty(), DataError,
      data.train_path << ": no validation documents (set data.val_fraction > 0 or data.val_path)");
  return {std::make_unique<TokenDataset>(train_docs, *tokenizer, data.seq_len, data.train_path),
          std::make_unique<TokenDataset>(val_docs, *tokenizer, data.seq_len, val_source)};
}

}  // namespace

MicroBatch to_micro_batch(const TokenBatch& batch) {
  auto options = torch::TensorOptions().dtype(torch::kInt64);
  MicroBatch micro;
  micro.input_ids = torch::from_blob(const_cast<int64_t*>(batch.input_ids.data()),
                                     {batch.rows, batch.seq_len}, options)
                        .clone();
  micro.labels = torch::from_blob(const_cast<int64_t*>(batch.labels.data()),
                                  {batch.rows, batch.seq_len}, options)
                     .clone();
  return micro;
}

MicroBatch micro_batch_of(const SequenceDataset& dataset, const std::vector<int64_t>& indices) {
  std::vector<int64_t> present = indices;
  for (int64_t& index : present)
    if (index == kPaddingRow) index = 0;  // any sequence: its labels are all ignored below
  MicroBatch micro = to_micro_batch(dataset.batch(present));
  for (size_t row = 0; row < indices.size(); ++row)
    if (indices[row] == kPaddingRow) micro.labels[static_cast<int64_t>(row)].fill_(kIgnoreIndex);
  return micro;
}

TrainingData load_training_data(const DataOptions& data, int64_t model_vocab_size) {
  return data.prepared.empty() ? load_text(data, model_vocab_size)
                               : load_prepared(data, model_vocab_size);
}

std::vector<MicroBatch> validation_batches(const SequenceDataset& dataset, int64_t batches,
                                           int64_t rows, int dp_rank, int dp_size) {
  std::vector<MicroBatch> result;
  int64_t next = 0;
  for (int64_t b = 0; b < batches; ++b) {
    std::vector<int64_t> indices;
    for (int r = 0; r < dp_size; ++r) {
      for (int64_t i = 0; i < rows; ++i) {
        if (r == dp_rank) indices.push_back(next % dataset.size());
        ++next;
      }
    }
    result.push_back(to_micro_batch(dataset.batch(indices)));
    if (next >= dataset.size() * 2) break;  // small validation sets: at most two passes
  }
  return result;
}

}  // namespace dst

// The data of a training run: the train and validation datasets (data.prepared shards, or a text
// corpus tokenised at start-up and split by data.val_fraction or read from data.val_path), and
// the fixed validation micro-batches each data-parallel rank evaluates.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "deepseek_train/data/batch_sampler.h"
#include "deepseek_train/data/sequence_dataset.h"
#include "deepseek_train/train/step_types.h"
#include "deepseek_train/train/train_config.h"

namespace dst {

struct TrainingData {
  std::unique_ptr<SequenceDataset> train;
  std::unique_ptr<SequenceDataset> validation;
};

// ConfigError (naming the file and the setting) when the data does not fit the model's
// vocabulary or the recipe's seq_len, or when no data is configured; DataError when there are
// no validation documents.
TrainingData load_training_data(const DataOptions& data, int64_t model_vocab_size);

// The micro-batch of the given dataset indices; kPaddingRow (data/batch_sampler.h) rows hold
// a sequence whose labels are all ignored (they add nothing to the loss or its gradient).
MicroBatch micro_batch_of(const SequenceDataset& dataset, const std::vector<int64_t>& indices);

// The held-out batches this rank evaluates: `batches` micro-batches of `rows` sequences, each
// rank taking its own rows of a fixed, wrapping walk over the validation set (at most two passes
// over a small one).
std::vector<MicroBatch> validation_batches(const SequenceDataset& dataset, int64_t batches,
                                           int64_t rows, int dp_rank, int dp_size);

}  // namespace dst

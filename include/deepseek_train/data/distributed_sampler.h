// Deterministic, resumable distributed sampler. Every optimizer step consumes one global batch of
// dp_size * grad_accum * micro_batch_size sequences from a per-epoch permutation of the dataset
// (reshuffled each epoch from the seed). Data-parallel rank r's micro-batch k of a step holds
// global-batch rows [(k * dp_size + r) * mbs, (k * dp_size + r + 1) * mbs), so the union over
// ranks and micro-batches is the same global batch for any dp size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "deepseek_train/data/batch_sampler.h"

namespace dst {

struct SamplerState {
  int64_t epoch = 0;
  int64_t offset = 0;  // position in the epoch's permutation of the next global batch
  bool operator==(const SamplerState& o) const { return epoch == o.epoch && offset == o.offset; }
};

class DistributedSampler final : public BatchSampler {
 public:
  // Throws DataError when the dataset cannot fill one global batch.
  DistributedSampler(int64_t dataset_size, uint64_t seed, int dp_rank, int dp_size,
                     int64_t micro_batch_size, int64_t grad_accum);

  // The next step's micro-batches for this rank: grad_accum lists of micro_batch_size indices.
  // Advances the state; an epoch's remainder smaller than a global batch is skipped.
  std::vector<std::vector<int64_t>> next_step() override;

  // The whole global batch of the next step (all ranks, in row order) without advancing; used by
  // single-process references in tests.
  std::vector<int64_t> peek_global_batch() const;

  const SamplerState& state() const { return state_; }
  void set_state(const SamplerState& state);
  int64_t global_batch_size() const;
  double expected_global_batch() const override { return static_cast<double>(global_batch_size()); }

  // Serialised as "epoch:offset" for checkpoints.
  std::string serialize() const override;
  void deserialize(const std::string& text) override;  // DataError on malformed text

 private:
  std::vector<int64_t> permutation(int64_t epoch) const;
  const std::vector<int64_t>& permutation_ref(int64_t epoch) const;  // cached, no copy
  void ensure_room();

  int64_t dataset_size_;
  uint64_t seed_;
  int dp_rank_;
  int dp_size_;
  int64_t micro_batch_size_;
  int64_t grad_accum_;
  SamplerState state_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_permutation_;
};

}  // namespace dst

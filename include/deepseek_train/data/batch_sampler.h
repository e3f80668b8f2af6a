// What a training run draws its steps from: per optimizer step, this data-parallel rank's
// micro-batches as lists of dataset indices (kPaddingRow marks a row that holds no example), and
// a state a checkpoint keeps as text. DistributedSampler (fixed batches from per-epoch
// permutations) and PoissonSampler (DP-SGD's variable batches) implement it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dst {

inline constexpr int64_t kPaddingRow = -1;

class BatchSampler {
 public:
  virtual ~BatchSampler() = default;
  // The next step's micro-batches for this rank (every rank gets the same number, each of
  // micro_batch_size rows). Advances the state.
  virtual std::vector<std::vector<int64_t>> next_step() = 0;
  // Sequences per step over all ranks (the expected number under Poisson sampling).
  virtual double expected_global_batch() const = 0;
  virtual std::string serialize() const = 0;
  // DataError on text another sampler (or nothing valid) wrote.
  virtual void deserialize(const std::string& text) = 0;
};

}  // namespace dst

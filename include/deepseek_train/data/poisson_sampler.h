// Poisson sampling for DP-SGD: at step s every example of the dataset joins the global batch
// independently with probability q (sample_rate), decided by a counter-based draw keyed by
// (key, s, index). A step's batch is therefore known without replaying the earlier ones (the
// state is the step count alone) and is the same under every layout. Data-parallel rank r takes
// the batch's examples r, r + dp, r + 2 dp, ... (in index order); every rank gets as many
// micro-batches of micro_batch_size rows as the fullest rank needs (at least one), the rows
// after a rank's examples being kPaddingRow. The key must stay secret for the privacy
// guarantee (privacy.noise_seed = 0 draws one per run).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "deepseek_train/data/batch_sampler.h"

namespace dst {

class PoissonSampler final : public BatchSampler {
 public:
  // DataError for an empty dataset, q outside (0, 1], bad rank or micro-batch size.
  PoissonSampler(int64_t dataset_size, uint64_t key, double sample_rate, int dp_rank, int dp_size,
                 int64_t micro_batch_size);

  std::vector<std::vector<int64_t>> next_step() override;
  double expected_global_batch() const override {
    return sample_rate_ * static_cast<double>(dataset_size_);
  }
  // "poisson:<steps taken>".
  std::string serialize() const override;
  void deserialize(const std::string& text) override;

  // Every rank's examples of step `step` (0-based), in index order.
  std::vector<int64_t> global_batch(int64_t step) const;
  int64_t steps_taken() const { return steps_; }

 private:
  int64_t dataset_size_;
  uint64_t key_;
  double sample_rate_;
  int dp_rank_, dp_size_;
  int64_t micro_batch_size_;
  int64_t steps_ = 0;
};

}  // namespace dst

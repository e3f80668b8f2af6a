#include "deepseek_train/data/poisson_sampler.h"

#include <algorithm>
#include <charconv>

#include "deepseek_train/core/error.h"
#include "deepseek_train/core/random.h"

namespace dst {

PoissonSampler::PoissonSampler(int64_t dataset_size, uint64_t key, double sample_rate, int dp_rank,
                               int dp_size, int64_t micro_batch_size)
    : dataset_size_(dataset_size),
      key_(key),
      sample_rate_(sample_rate),
      dp_rank_(dp_rank),
      dp_size_(dp_size),
      micro_batch_size_(micro_batch_size) {
  DST_CHECK(dataset_size > 0, DataError, "sampler: dataset is empty (size " << dataset_size << ")");
  DST_CHECK(sample_rate > 0 && sample_rate <= 1, DataError,
            "sampler: Poisson sample rate must be in (0, 1], got "
                << sample_rate << " (expected batch / dataset size " << dataset_size << ")");
  DST_CHECK(dp_size > 0 && dp_rank >= 0 && dp_rank < dp_size, DataError,
            "sampler: dp_rank " << dp_rank << " out of range [0, " << dp_size << ")");
  DST_CHECK(micro_batch_size > 0, DataError,
            "sampler: micro_batch_size must be positive, got " << micro_batch_size);
}

std::vector<int64_t> PoissonSampler::global_batch(int64_t step) const {
  const uint64_t step_key = splitmix64(key_ ^ splitmix64(static_cast<uint64_t>(step) + 0x9e37));
  std::vector<int64_t> batch;
  for (int64_t index = 0; index < dataset_size_; ++index) {
    // A uniform in [0, 1) from the top 53 bits of the example's own counter.
    const double u =
        static_cast<double>(splitmix64(step_key + static_cast<uint64_t>(index)) >> 11) * 0x1.0p-53;
    if (u < sample_rate_) batch.push_back(index);
  }
  return batch;
}

std::vector<std::vector<int64_t>> PoissonSampler::next_step() {
  const std::vector<int64_t> batch = global_batch(steps_++);
  const int64_t size = static_cast<int64_t>(batch.size());
  const int64_t fullest = (size + dp_size_ - 1) / dp_size_;
  const int64_t micro_batches =
      std::max<int64_t>(1, (fullest + micro_batch_size_ - 1) / micro_batch_size_);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(micro_batches));
  int64_t taken = 0;
  for (auto& micro : out) {
    for (int64_t row = 0; row < micro_batch_size_; ++row, ++taken) {
      const int64_t position = taken * dp_size_ + dp_rank_;
      micro.push_back(position < size ? batch[static_cast<size_t>(position)] : kPaddingRow);
    }
  }
  return out;
}

std::string PoissonSampler::serialize() const { return "poisson:" + std::to_string(steps_); }

void PoissonSampler::deserialize(const std::string& text) {
  const std::string prefix = "poisson:";
  int64_t steps = -1;
  const char* first = text.data() + prefix.size();
  const char* last = text.data() + text.size();
  const bool ok = text.rfind(prefix, 0) == 0 && first != last && *first >= '0' && *first <= '9' &&
                  std::from_chars(first, last, steps).ptr == last;
  DST_CHECK(ok, DataError,
            "sampler: state '" << text
                               << "' is not a Poisson sampler's (\"poisson:<steps>\"); a run "
                                  "without DP-SGD cannot be resumed with privacy.sampling poisson");
  steps_ = steps;
}

}  // namespace dst

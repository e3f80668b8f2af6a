// Deterministic, resumable sampler: per-epoch permutations and per-rank slices of global batches.
#include "deepseek_train/data/distributed_sampler.h"

#include <charconv>
#include <random>

#include "deepseek_train/core/error.h"
#include "deepseek_train/core/random.h"

namespace dst {
namespace {

// Parses a non-negative decimal integer occupying the whole of [first, last).
bool parse_count(const char* first, const char* last, int64_t* value) {
  if (first == last || *first < '0' || *first > '9') return false;
  const auto result = std::from_chars(first, last, *value);
  return result.ec == std::errc() && result.ptr == last;
}

}  // namespace

DistributedSampler::DistributedSampler(int64_t dataset_size, uint64_t seed, int dp_rank,
                                       int dp_size, int64_t micro_batch_size, int64_t grad_accum)
    : dataset_size_(dataset_size),
      seed_(seed),
      dp_rank_(dp_rank),
      dp_size_(dp_size),
      micro_batch_size_(micro_batch_size),
      grad_accum_(grad_accum) {
  DST_CHECK(dataset_size > 0, DataError, "sampler: dataset is empty (size " << dataset_size << ")");
  DST_CHECK(dp_size > 0, DataError, "sampler: dp_size must be positive, got " << dp_size);
  DST_CHECK(dp_rank >= 0 && dp_rank < dp_size, DataError,
            "sampler: dp_rank " << dp_rank << " out of range [0, " << dp_size << ")");
  DST_CHECK(micro_batch_size > 0, DataError,
            "sampler: micro_batch_size must be positive, got " << micro_batch_size);
  DST_CHECK(grad_accum > 0, DataError, "sampler: grad_accum must be positive, got " << grad_accum);
  DST_CHECK(micro_batch_size <= dataset_size / dp_size / grad_accum, DataError,
            "sampler: dataset of " << dataset_size << " sequences cannot fill one global batch of "
                                   << dp_size << " ranks x " << grad_accum << " micro-batches x "
                                   << micro_batch_size << " sequences");
}

int64_t DistributedSampler::global_batch_size() const {
  return static_cast<int64_t>(dp_size_) * grad_accum_ * micro_batch_size_;
}

std::vector<int64_t> DistributedSampler::permutation(int64_t epoch) const {
  return permutation_ref(epoch);
}

const std::vector<int64_t>& DistributedSampler::permutation_ref(int64_t epoch) const {
  if (cached_epoch_ != epoch) {
    std::mt19937_64 rng(splitmix64(seed_) ^ splitmix64(static_cast<uint64_t>(epoch) + 0x5bd1e995));
    cached_permutation_.resize(static_cast<size_t>(dataset_size_));
    for (int64_t i = 0; i < dataset_size_; ++i) cached_permutation_[static_cast<size_t>(i)] = i;
    for (int64_t i = dataset_size_ - 1; i > 0; --i) {
      const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i + 1)));
      std::swap(cached_permutation_[static_cast<size_t>(i)],
                cached_permutation_[static_cast<size_t>(j)]);
    }
    cached_epoch_ = epoch;
  }
  return cached_permutation_;
}

void DistributedSampler::ensure_room() {
  if (state_.offset + global_batch_size() > dataset_size_) {
    ++state_.epoch;
    state_.offset = 0;
  }
}

std::vector<std::vector<int64_t>> DistributedSampler::next_step() {
  ensure_room();
  const std::vector<int64_t>& perm = permutation_ref(state_.epoch);
  std::vector<std::vector<int64_t>> micro_batches(static_cast<size_t>(grad_accum_));
  for (int64_t k = 0; k < grad_accum_; ++k) {
    const int64_t begin = state_.offset + (k * dp_size_ + dp_rank_) * micro_batch_size_;
    micro_batches[static_cast<size_t>(k)].assign(perm.begin() + begin,
                                                 perm.begin() + begin + micro_batch_size_);
  }
  state_.offset += global_batch_size();
  return micro_batches;
}

std::vector<int64_t> DistributedSampler::peek_global_batch() const {
  SamplerState s = state_;
  if (s.offset + global_batch_size() > dataset_size_) {
    ++s.epoch;
    s.offset = 0;
  }
  const std::vector<int64_t>& perm = permutation_ref(s.epoch);
  return std::vector<int64_t>(perm.begin() + s.offset,
                              perm.begin() + s.offset + global_batch_size());
}

void DistributedSampler::set_state(const SamplerState& state) {
  DST_CHECK(state.epoch >= 0 && state.offset >= 0 && state.offset <= dataset_size_, DataError,
            "sampler: invalid state epoch " << state.epoch << " offset " << state.offset
                                            << " for a dataset of " << dataset_size_
                                            << " sequences");
  state_ = state;
}

std::string DistributedSampler::serialize() const {
  return std::to_string(state_.epoch) + ":" + std::to_string(state_.offset);
}

void DistributedSampler::deserialize(const std::string& text) {
  const size_t colon = text.find(':');
  SamplerState state;
  const char* data = text.data();
  const bool ok = colon != std::string::npos && parse_count(data, data + colon, &state.epoch) &&
                  parse_count(data + colon + 1, data + text.size(), &state.offset);
  DST_CHECK(ok, DataError, "sampler: malformed state '" << text << "' (expected \"epoch:offset\")");
  set_state(state);
}

}  // namespace dst

// DP-SGD's layout-free noise: a parameter's noise drawn whole equals the concatenation of its
// shards' (any split), differs between steps and parameters, and has the configured mean and
// standard deviation within sampling error (zero gradients plus noise).
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "deepseek_train/privacy/dp_noise.h"

using namespace dst;

TEST_CASE("dp noise: the same values whatever the shards, a new draw per step and parameter",
          "[privacy]") {
  const int64_t n = 1001;
  const uint64_t key = dp_noise_key(7, 3, "model.layers.0.mlp.up_proj.weight");
  std::vector<float> whole(n, 0.0f);
  add_dp_noise(whole.data(), n, 0.5, key, 0);
  for (int shards : {2, 3, 8}) {
    std::vector<float> pieces(n, 0.0f);
    const int64_t per = (n + shards - 1) / shards;
    for (int64_t begin = 0; begin < n; begin += per)
      add_dp_noise(pieces.data() + begin, std::min(per, n - begin), 0.5, key, begin);
    CHECK(pieces == whole);
  }
  std::vector<float> next_step(n, 0.0f), other(n, 0.0f);
  add_dp_noise(next_step.data(), n, 0.5, dp_noise_key(7, 4, "model.layers.0.mlp.up_proj.weight"),
               0);
  add_dp_noise(other.data(), n, 0.5, dp_noise_key(7, 3, "model.layers.0.mlp.gate_proj.weight"), 0);
  CHECK(next_step != whole);
  CHECK(other != whole);
  // Added, not assigned.
  std::vector<float> offset(n, 1.0f);
  add_dp_noise(offset.data(), n, 0.5, key, 0);
  for (int64_t i = 0; i < n; ++i) CHECK(offset[i] == Approx(1.0f + whole[i]).margin(1e-6));
}

TEST_CASE("dp noise: mean, standard deviation and the normal's one-sigma mass", "[privacy]") {
  const int64_t n = 1 << 20;
  const double stddev = 1.5;
  std::vector<float> values(n, 0.0f);
  add_dp_noise(values.data(), n, stddev, dp_noise_key(1, 1, "w"), 0);
  double sum = 0, squares = 0;
  int64_t within_one_sigma = 0;
  for (float v : values) {
    sum += v;
    squares += static_cast<double>(v) * v;
    within_one_sigma += std::abs(v) <= stddev ? 1 : 0;
  }
  const double mean = sum / n, std_measured = std::sqrt(squares / n - mean * mean);
  // Sampling error: the mean's standard error is stddev/sqrt(n) (5 of them allowed), the
  // standard deviation's about stddev/sqrt(2n).
  CHECK(std::abs(mean) <= 5 * stddev / std::sqrt(static_cast<double>(n)));
  CHECK(std::abs(std_measured - stddev) <= 5 * stddev / std::sqrt(2.0 * n));
  CHECK(static_cast<double>(within_one_sigma) / n == Approx(0.682689).margin(0.003));
}

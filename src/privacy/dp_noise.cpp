#include "deepseek_train/privacy/dp_noise.h"

#include <cmath>

#include "deepseek_train/core/random.h"

namespace dst {

namespace {

// A uniform double in (0, 1] from the top 53 bits of a 64-bit value.
double unit_interval(uint64_t bits) { return (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53; }

}  // namespace

uint64_t dp_noise_key(uint64_t seed, int64_t step, const std::string& parameter) {
  uint64_t name_hash = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : parameter) {
    name_hash ^= c;
    name_hash *= 1099511628211ull;
  }
  return splitmix64(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(step))) ^ name_hash);
}

void add_dp_noise(float* values, int64_t count, double stddev, uint64_t key,
                  int64_t first_element) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int64_t i = 0; i < count; ++i) {
    // Two independent uniforms per element from its own counter; Box-Muller's cosine branch.
    const uint64_t counter = key + 2 * static_cast<uint64_t>(first_element + i);
    const double u1 = unit_interval(splitmix64(counter));
    const double u2 = unit_interval(splitmix64(counter + 1));
    values[i] +=
        static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2));
  }
}

}  // namespace dst

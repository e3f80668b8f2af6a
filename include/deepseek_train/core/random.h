// Portable random helpers: results depend only on the seed, never on the standard library
// (std::uniform_int_distribution and std::shuffle differ between implementations).
#pragma once

#include <cstdint>
#include <random>

namespace dst {

// SplitMix64 finaliser: mixes a 64-bit value (e.g. seed and epoch) into a well-spread seed.
uint64_t splitmix64(uint64_t x);

// Uniform integer in [0, n), n > 0, by rejection sampling.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n);

}  // namespace dst

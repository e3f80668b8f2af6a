// DP-SGD's Gaussian noise, the same whatever the parallel layout: element e of parameter `name`
// at step s gets N(0, stddev²) from a counter-based generator keyed by (seed, s, name, e) — no
// generator state to keep in step across ranks — so whoever owns the element (every rank under
// DDP, one shard's owner under ZeRO, the tp rank holding that slice) adds the same value, and a
// single process and any layout apply the same update. Torch-free arithmetic on float arrays.
#pragma once

#include <cstdint>
#include <string>

namespace dst {

// The noise key of one parameter at one step.
uint64_t dp_noise_key(uint64_t seed, int64_t step, const std::string& parameter);

// Adds noise for elements [first_element, first_element + count) of the parameter `key` names
// to `values` (count floats).
void add_dp_noise(float* values, int64_t count, double stddev, uint64_t key, int64_t first_element);

}  // namespace dst

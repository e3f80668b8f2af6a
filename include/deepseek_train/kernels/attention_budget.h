// What the fused causal attention (kernels/fused_ops.h) keeps for its backward: the softmax
// probabilities while they fit a byte budget, otherwise one log-sum-exp per score row (the
// backward then recomputes them). Torch-free, so the memory plan applies the same rule.
#pragma once

#include <cstdint>

namespace dst {

constexpr int64_t kDefaultMaxKeptProbabilityBytes = int64_t{32} << 20;

// Whether batch x heads x seq x seq fp32 probabilities fit `max_kept_probability_bytes`.
constexpr bool attention_keeps_probabilities(int64_t batch, int64_t heads, int64_t seq,
                                             int64_t max_kept_probability_bytes) {
  return batch * heads * seq * seq * int64_t{4} <= max_kept_probability_bytes;
}

}  // namespace dst

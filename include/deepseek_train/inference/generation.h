// Text generation with a key/value cache: the prompt runs once (prefill), then one token per
// step (decode), each chosen greedily or sampled with Hugging Face's logits processors in their
// order (repetition penalty, temperature, top-k, top-p), until an end-of-sequence id, a stop
// string or the token budget.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "deepseek_train/model/causal_lm.h"

namespace dst {

struct SamplingOptions {
  int64_t max_new_tokens = 128;
  bool greedy = false;              // argmax (after the repetition penalty), no sampling
  double temperature = 1.0;         // > 0
  int64_t top_k = 0;                // 0: off
  double top_p = 1.0;               // (0, 1]; 1: off
  double repetition_penalty = 1.0;  // >= 1 penalises ids already in the sequence
  uint64_t seed = 0;
  std::vector<int32_t> eos_ids;  // stop after generating any of these
  // Checks the options; ConfigError naming the option ("--top-p") otherwise.
  void validate() const;
};

struct GenerationResult {
  std::vector<int32_t> ids;  // generated ids (an end-of-sequence id included)
  std::string stop_reason;   // "eos", "stop", "length"
  double prefill_seconds = 0, decode_seconds = 0;
};

// Called with each generated id as it is chosen; returns true to stop (a stop string appeared).
using TokenCallback = std::function<bool(int32_t id)>;
// The same for several prompts decoded together: `row` is the prompt's index.
using BatchTokenCallback = std::function<bool(size_t row, int32_t id)>;

// Generates a continuation of `prompt` (ids) with `model` (a whole model on this rank, run in
// eval mode: no dropout). ConfigError when the prompt is empty or longer than
// max_position_embeddings; generation stops ("length") when the sequence reaches it.
GenerationResult generate(CausalLM& model, const std::vector<int32_t>& prompt,
                          const SamplingOptions& options, const TokenCallback& on_token = {});

// Several prompts decoded together (left-padded, model/kv_cache.h): row r's result is what
// generate() gives prompts[r] alone (each row samples from its own generator seeded with
// options.seed), up to rounding; rows that stop early wait for the others. The budget is the
// shortest any row has left before max_position_embeddings.
std::vector<GenerationResult> generate_batch(CausalLM& model,
                                             const std::vector<std::vector<int32_t>>& prompts,
                                             const SamplingOptions& options,
                                             const BatchTokenCallback& on_token = {});

// The id chosen from `logits` ([vocab], fp32) of the next position given the ids so far
// (exposed for tests).
int32_t choose_next_id(torch::Tensor logits, const std::vector<int32_t>& sequence,
                       const SamplingOptions& options, at::Generator& generator);

}  // namespace dst

#include "deepseek_train/inference/generation.h"

#include <ATen/core/Generator.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// transformers' RepetitionPenaltyLogitsProcessor: each id already in the sequence has its logit
// divided by the penalty when positive, multiplied when negative.
void penalise_repetition(torch::Tensor& logits, const std::vector<int32_t>& sequence,
                         double penalty) {
  if (penalty == 1.0 || sequence.empty()) return;
  const torch::Tensor ids =
      torch::tensor(std::vector<int64_t>(sequence.begin(), sequence.end()), torch::kLong);
  const torch::Tensor seen = logits.index_select(0, ids);
  logits.index_put_({ids}, torch::where(seen < 0, seen * penalty, seen / penalty));
}

// transformers' TopKLogitsWarper and TopPLogitsWarper (min_tokens_to_keep 1).
void keep_top_k_and_p(torch::Tensor& logits, int64_t top_k, double top_p) {
  const float removed = -std::numeric_limits<float>::infinity();
  if (top_k > 0 && top_k < logits.size(0)) {
    const torch::Tensor kth = std::get<0>(logits.topk(top_k)).select(0, top_k - 1);
    logits.masked_fill_(logits < kth, removed);
  }
  if (top_p < 1.0) {
    auto [sorted, order] = logits.sort(/*dim=*/0, /*descending=*/false);
    const torch::Tensor cumulative = sorted.softmax(0).cumsum(0);
    torch::Tensor remove_sorted = cumulative <= (1.0 - top_p);
    remove_sorted.select(0, remove_sorted.size(0) - 1).fill_(false);
    logits.masked_fill_(remove_sorted.scatter(0, order, remove_sorted), removed);
  }
}

}  // namespace

void SamplingOptions::validate() const {
  DST_CHECK(max_new_tokens >= 0, ConfigError,
            "--max-new-tokens must be >= 0, got " << max_new_tokens);
  DST_CHECK(temperature > 0, ConfigError, "--temperature must be positive, got " << temperature);
  DST_CHECK(top_k >= 0, ConfigError, "--top-k must be >= 0, got " << top_k);
  DST_CHECK(top_p > 0 && top_p <= 1, ConfigError, "--top-p must be in (0, 1], got " << top_p);
  DST_CHECK(repetition_penalty > 0, ConfigError,
            "--repetition-penalty must be positive, got " << repetition_penalty);
}

int32_t choose_next_id(torch::Tensor logits, const std::vector<int32_t>& sequence,
                       const SamplingOptions& options, at::Generator& generator) {
  // On the CPU whatever device computed the logits: the same draws from the same seed.
  logits = logits.to(torch::kCPU, torch::kFloat).clone();
  penalise_repetition(logits, sequence, options.repetition_penalty);
  if (options.greedy) return static_cast<int32_t>(logits.argmax().item<int64_t>());
  if (options.temperature != 1.0) logits.div_(options.temperature);
  keep_top_k_and_p(logits, options.top_k, options.top_p);
  const torch::Tensor probabilities = logits.softmax(0);
  return static_cast<int32_t>(
      at::multinomial(probabilities, 1, /*replacement=*/false, generator).item<int64_t>());
}

namespace {

// The prompts as one left-padded [rows, longest] id tensor on `device` and each row's padding.
std::pair<torch::Tensor, std::vector<int64_t>> left_padded(
    const std::vector<std::vector<int32_t>>& prompts, const c10::Device& device) {
  size_t longest = 0;
  for (const auto& prompt : prompts) longest = std::max(longest, prompt.size());
  std::vector<int64_t> ids, padding;
  for (const auto& prompt : prompts) {
    padding.push_back(static_cast<int64_t>(longest - prompt.size()));
    ids.insert(ids.end(), longest - prompt.size(), 0);  // any id: pad columns are never attended
    ids.insert(ids.end(), prompt.begin(), prompt.end());
  }
  const int64_t rows = static_cast<int64_t>(prompts.size());
  return {torch::tensor(ids, torch::kLong).view({rows, -1}).to(device), padding};
}

void check_prompts(const std::vector<std::vector<int32_t>>& prompts, int64_t limit) {
  DST_CHECK(!prompts.empty(), ConfigError, "generate: no prompts");
  for (const auto& prompt : prompts) {
    DST_CHECK(!prompt.empty(), ConfigError, "generate: the prompt has no tokens");
    DST_CHECK(static_cast<int64_t>(prompt.size()) <= limit, ConfigError,
              "generate: the prompt has " << prompt.size() << " tokens, more than the model's "
                                          << "max_position_embeddings " << limit);
  }
}

}  // namespace

std::vector<GenerationResult> generate_batch(CausalLM& model,
                                             const std::vector<std::vector<int32_t>>& prompts,
                                             const SamplingOptions& options,
                                             const BatchTokenCallback& on_token) {
  options.validate();
  const int64_t limit = model.config().max_position_embeddings;
  check_prompts(prompts, limit);
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();  // no dropout while generating
  const c10::Device device = model.parameters().front().device();
  auto [input, padding] = left_padded(prompts, device);
  KeyValueCache cache;
  if (std::any_of(padding.begin(), padding.end(), [](int64_t p) { return p > 0; }))
    cache.left_padding = torch::tensor(padding, torch::kLong).to(device);
  const size_t rows = prompts.size();
  std::vector<at::Generator> generators;
  for (size_t r = 0; r < rows; ++r)
    generators.push_back(at::make_generator<at::CPUGeneratorImpl>(options.seed));
  std::vector<std::vector<int32_t>> sequences = prompts;
  std::vector<GenerationResult> results(rows);
  std::vector<bool> active(rows, true);
  size_t remaining = rows;
  for (auto& result : results) result.stop_reason = "length";
  const int64_t budget = std::min<int64_t>(options.max_new_tokens, limit - input.size(1));
  auto start = std::chrono::steady_clock::now();
  double prefill_seconds = 0;
  for (int64_t step = 0; step < budget && remaining > 0; ++step) {
    const torch::Tensor logits = model.forward_incremental(input, cache, /*last_only=*/true);
    std::vector<int64_t> next(rows);
    for (size_t r = 0; r < rows; ++r) {
      next[r] = sequences[r].back();  // a finished row repeats its last id (its output is unused)
      if (!active[r]) continue;
      const int32_t id =
          choose_next_id(logits[static_cast<int64_t>(r)][-1], sequences[r], options, generators[r]);
      next[r] = id;
      sequences[r].push_back(id);
      results[r].ids.push_back(id);
      const bool stop = on_token && on_token(r, id);
      const auto& eos = options.eos_ids;
      if (std::find(eos.begin(), eos.end(), id) != eos.end())
        results[r].stop_reason = "eos";
      else if (stop)
        results[r].stop_reason = "stop";
      if (results[r].stop_reason != "length") {
        active[r] = false;
        --remaining;
      }
    }
    if (step == 0) {
      prefill_seconds = seconds_since(start);
      start = std::chrono::steady_clock::now();
    }
    input = torch::tensor(next, torch::kLong).view({static_cast<int64_t>(rows), 1}).to(device);
  }
  const double decode_seconds = seconds_since(start);
  for (auto& result : results) {
    result.prefill_seconds = prefill_seconds;
    if (!result.ids.empty()) result.decode_seconds = decode_seconds;
  }
  model.train(was_training);
  return results;
}

GenerationResult generate(CausalLM& model, const std::vector<int32_t>& prompt,
                          const SamplingOptions& options, const TokenCallback& on_token) {
  BatchTokenCallback row_callback;
  if (on_token) row_callback = [&on_token](size_t, int32_t id) { return on_token(id); };
  return generate_batch(model, {prompt}, options, row_callback).front();
}

}  // namespace dst

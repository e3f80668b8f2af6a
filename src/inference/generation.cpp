#include "deepseek_train/inference/generation.h"

#include <ATen/core/Generator.h>
#include <torch/torch.h>

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

GenerationResult generate(CausalLM& model, const std::vector<int32_t>& prompt,
                          const SamplingOptions& options, const TokenCallback& on_token) {
  options.validate();
  DST_CHECK(!prompt.empty(), ConfigError, "generate: the prompt has no tokens");
  const int64_t limit = model.config().max_position_embeddings;
  DST_CHECK(static_cast<int64_t>(prompt.size()) <= limit, ConfigError,
            "generate: the prompt has " << prompt.size() << " tokens, more than the model's "
                                        << "max_position_embeddings " << limit);
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();  // no dropout while generating
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<int32_t> sequence = prompt;
  GenerationResult result;
  result.stop_reason = "length";
  KeyValueCache cache;
  auto start = std::chrono::steady_clock::now();
  const c10::Device device = model.parameters().front().device();
  torch::Tensor input =
      torch::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), torch::kLong)
          .unsqueeze(0)
          .to(device);
  const int64_t budget =
      std::min<int64_t>(options.max_new_tokens, limit - static_cast<int64_t>(prompt.size()));
  for (int64_t step = 0; step < budget; ++step) {
    const torch::Tensor logits = model.forward_incremental(input, cache, /*last_only=*/true);
    const int32_t id = choose_next_id(logits[0][-1], sequence, options, generator);
    if (step == 0) {
      result.prefill_seconds = seconds_since(start);
      start = std::chrono::steady_clock::now();
    }
    sequence.push_back(id);
    result.ids.push_back(id);
    const bool stop = on_token && on_token(id);
    if (std::find(options.eos_ids.begin(), options.eos_ids.end(), id) != options.eos_ids.end()) {
      result.stop_reason = "eos";
      break;
    }
    if (stop) {
      result.stop_reason = "stop";
      break;
    }
    input = torch::full({1, 1}, static_cast<int64_t>(id),
                        torch::TensorOptions().dtype(torch::kLong).device(device));
  }
  if (!result.ids.empty()) result.decode_seconds = seconds_since(start);
  model.train(was_training);
  return result;
}

}  // namespace dst

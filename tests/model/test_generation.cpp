// The token choice of dstrain generate against the definitions of transformers' logits
// processors, and the generation loop's stopping rules.
#include <ATen/core/Generator.h>
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "deepseek_train/core/error.h"
#include "deepseek_train/inference/generation.h"
#include "deepseek_train/model/deepseek.h"
#include "deepseek_train/model/llama.h"
#include "support/deepseek_config.h"

using namespace dst;

namespace {

at::Generator seeded(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

}  // namespace

TEST_CASE("generation: greedy, top-k 1 and a tiny top-p pick the argmax", "[model]") {
  const torch::Tensor logits = torch::tensor({0.1f, 2.0f, -1.0f, 1.9f});
  auto gen = seeded(1);
  SamplingOptions greedy;
  greedy.greedy = true;
  CHECK(choose_next_id(logits, {}, greedy, gen) == 1);
  SamplingOptions top1;
  top1.top_k = 1;
  SamplingOptions tiny_p;
  tiny_p.top_p = 1e-6;
  for (int i = 0; i < 20; ++i) {
    CHECK(choose_next_id(logits, {}, top1, gen) == 1);
    CHECK(choose_next_id(logits, {}, tiny_p, gen) == 1);
  }
}

TEST_CASE("generation: the repetition penalty divides positive and multiplies negative logits",
          "[model]") {
  // 2.0 / 4 = 0.5 < 1.9 / 1: the repeated id 1 loses to id 3; -1.0 * 4 keeps id 2 last.
  const torch::Tensor logits = torch::tensor({0.1f, 2.0f, -1.0f, 1.9f});
  SamplingOptions options;
  options.greedy = true;
  options.repetition_penalty = 4.0;
  auto gen = seeded(1);
  CHECK(choose_next_id(logits, {1, 1, 2}, options, gen) == 3);
}

TEST_CASE("generation: sampling follows softmax(logits / T) restricted to top-k and top-p",
          "[model]") {
  const torch::Tensor logits = torch::tensor({1.0f, 2.0f, 0.5f, 3.0f, -2.0f});
  auto frequencies = [&](const SamplingOptions& options) {
    auto gen = seeded(7);
    std::vector<double> counts(5, 0.0);
    const int draws = 20000;
    for (int i = 0; i < draws; ++i) counts[choose_next_id(logits, {}, options, gen)] += 1.0 / draws;
    return counts;
  };
  SamplingOptions warm;
  warm.temperature = 2.0;
  const torch::Tensor p = (logits / 2.0).softmax(0);
  const auto f = frequencies(warm);
  for (int i = 0; i < 5; ++i) CHECK(f[i] == Approx(p[i].item<double>()).margin(0.015));
  // top-k 2 keeps ids 3 and 1 in the ratio e^3 : e^2.
  SamplingOptions top2;
  top2.top_k = 2;
  const auto k = frequencies(top2);
  CHECK(k[0] + k[2] + k[4] == 0.0);
  CHECK(k[3] / k[1] == Approx(std::exp(1.0)).epsilon(0.05));
  // top-p 0.7: sorted probabilities .64 (id 3), .24 (id 1), ...: ids 3 and 1 are kept (the
  // smallest set whose mass reaches 0.7), as transformers' TopPLogitsWarper keeps them.
  SamplingOptions nucleus;
  nucleus.top_p = 0.7;
  const auto n = frequencies(nucleus);
  CHECK(n[0] + n[2] + n[4] == 0.0);
  CHECK(n[1] > 0.2);
}

TEST_CASE("generation: stops at an end-of-sequence id, a callback or the budget", "[model]") {
  ModelConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 16;
  LlamaModel model(c);
  model->initialize(5);
  SamplingOptions options;
  options.greedy = true;
  options.max_new_tokens = 6;
  const GenerationResult plain = generate(*model, {1, 2, 3}, options);
  REQUIRE(plain.ids.size() == 6);
  CHECK(plain.stop_reason == "length");
  options.eos_ids = {plain.ids[2]};
  const GenerationResult eos = generate(*model, {1, 2, 3}, options);
  CHECK(eos.stop_reason == "eos");
  const auto first = std::find(plain.ids.begin(), plain.ids.end(), plain.ids[2]);
  CHECK(eos.ids == std::vector<int32_t>(plain.ids.begin(), first + 1));
  options.eos_ids.clear();
  int seen = 0;
  const GenerationResult stopped =
      generate(*model, {1, 2, 3}, options, [&seen](int32_t) { return ++seen == 2; });
  CHECK(stopped.stop_reason == "stop");
  CHECK(stopped.ids.size() == 2);
  // The budget ends at max_position_embeddings; a longer prompt is a one-line error.
  options.max_new_tokens = 100;
  CHECK(generate(*model, {1, 2, 3}, options).ids.size() == 13);
  CHECK_THROWS_WITH(generate(*model, std::vector<int32_t>(17, 1), options),
                    Catch::Contains("more than the model's max_position_embeddings 16"));
}

namespace {

ModelConfig tiny_llama_config() {
  ModelConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  return c;
}

// Prompts of different lengths decoded together give each prompt's own result: the last real
// token's logits after a left-padded prefill equal the prompt's alone, and greedy ids equal
// generate() of each prompt (sampling too: each row draws from its own generator).
void check_batched_equals_single(CausalLM& model) {
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5, 6, 7, 8, 9, 10}, {11}};
  torch::NoGradGuard no_grad;
  model.eval();
  KeyValueCache padded;
  padded.left_padding = torch::tensor(std::vector<int64_t>{4, 0, 6}, torch::kLong);
  std::vector<int64_t> ids;
  for (const auto& prompt : prompts) {
    ids.insert(ids.end(), 7 - prompt.size(), 0);
    ids.insert(ids.end(), prompt.begin(), prompt.end());
  }
  const torch::Tensor batched =
      model.forward_incremental(torch::tensor(ids, torch::kLong).view({3, 7}), padded, true);
  for (size_t r = 0; r < prompts.size(); ++r) {
    KeyValueCache alone;
    const torch::Tensor single = model.forward_incremental(
        torch::tensor(std::vector<int64_t>(prompts[r].begin(), prompts[r].end()), torch::kLong)
            .unsqueeze(0),
        alone, true);
    INFO("row " << r);
    CHECK(torch::allclose(batched[static_cast<int64_t>(r)], single[0], 1e-5, 1e-5));
  }
  for (bool greedy : {true, false}) {
    SamplingOptions options;
    options.greedy = greedy;
    options.max_new_tokens = 8;
    options.seed = 5;
    const std::vector<GenerationResult> together = generate_batch(model, prompts, options);
    REQUIRE(together.size() == prompts.size());
    for (size_t r = 0; r < prompts.size(); ++r) {
      INFO("greedy " << greedy << " row " << r);
      CHECK(together[r].ids == generate(model, prompts[r], options).ids);
    }
  }
  // One row stops at its end-of-sequence id while the others go on.
  SamplingOptions options;
  options.greedy = true;
  options.max_new_tokens = 8;
  const std::vector<int32_t> first_alone = generate(model, prompts[0], options).ids;
  options.eos_ids = {first_alone[1]};
  const std::vector<GenerationResult> stopped = generate_batch(model, prompts, options);
  CHECK(stopped[0].stop_reason == "eos");
  CHECK(stopped[0].ids == generate(model, prompts[0], options).ids);
  CHECK(stopped[1].ids == generate(model, prompts[1], options).ids);
}

}  // namespace

TEST_CASE("generation: a left-padded batch of prompts equals each prompt alone (llama)",
          "[model]") {
  LlamaModel model(tiny_llama_config());
  model->initialize(9);
  check_batched_equals_single(*model);
}

TEST_CASE("generation: a left-padded batch of prompts equals each prompt alone (deepseek v2/v3)",
          "[model]") {
  for (const char* family : {"deepseek_v3", "deepseek_v2"}) {
    INFO(family);
    ModelConfig c = testing::tiny_deepseek_v3(tiny_llama_config());
    c.num_hidden_layers = 2;
    if (std::string(family) == "deepseek_v2") {
      c.model_type = "deepseek_v2";
      c.topk_method = "group_limited_greedy";
      c.scoring_func = "softmax";
      c.norm_topk_prob = false;
      c.q_lora_rank = 0;
    }
    DeepseekModel model(c);
    model->initialize(9);
    check_batched_equals_single(*model);
  }
}

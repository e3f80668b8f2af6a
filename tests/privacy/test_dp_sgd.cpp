// DP-SGD's pieces in one process: the per-example tap on whole models against one backward per
// example (fp64, within 1e-9 relative: full fine-tuning of Llama with untied embeddings, LoRA
// with B non-zero on Llama and on DeepSeek-V3's MLA and MLPs, prefix tuning), the parameters it
// refuses by name, Poisson sampling, the
// privacy options, and the noise a trainer adds when every gradient is zero (its norm and
// per-element mean and std within sampling error of the configured σ·C / E[B]).
#include <torch/torch.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <set>

#include "deepseek_train/adapters/adapter.h"
#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/poisson_sampler.h"
#include "deepseek_train/model/deepseek.h"
#include "deepseek_train/model/llama.h"
#include "deepseek_train/privacy/per_example_tap.h"
#include "deepseek_train/privacy/rdp_accountant.h"
#include "deepseek_train/train/provenance.h"
#include "deepseek_train/train/trainer.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

std::vector<std::pair<std::string, torch::Tensor>> trainable(CausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : model.named_parameters())
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  return out;
}

// Example i's loss: its mean token loss.
torch::Tensor example_loss(CausalLM& model, const torch::Tensor& logits,
                           const torch::Tensor& labels) {
  return model.loss_sum(logits, labels) / static_cast<double>(count_target_tokens(labels));
}

// ||∇ℓ_i||² over the trainable parameters, one forward and backward per example.
std::vector<double> brute_force_sq_norms(CausalLM& model, const MicroBatch& batch) {
  std::vector<double> out;
  for (int64_t i = 0; i < batch.input_ids.size(0); ++i) {
    for (auto& [name, p] : trainable(model)) p.mutable_grad() = torch::Tensor();
    const MicroBatch row = rows_of(batch, i, 1);
    example_loss(model, model.forward_chunk(0, row.input_ids), row.labels).backward();
    double sq = 0;
    for (auto& [name, p] : trainable(model))
      if (p.grad().defined()) sq += p.grad().pow(2).sum().item<double>();
    out.push_back(sq);
  }
  return out;
}

torch::Tensor tap_sq_norms(CausalLM& model, const MicroBatch& batch) {
  PerExampleGradientTap tap(trainable(model));
  PerExampleTapScope scope(&tap);
  const torch::Tensor logits = model.forward_chunk(0, batch.input_ids);
  torch::Tensor loss = torch::zeros({}, torch::kFloat64);
  for (int64_t i = 0; i < batch.input_ids.size(0); ++i) {
    const MicroBatch row = rows_of(batch, i, 1);
    loss = loss + example_loss(model, logits.narrow(0, i, 1), row.labels);
  }
  return tap.squared_norms(loss, batch.input_ids.size(0));
}

void check_tap_against_brute_force(CausalLM& model) {
  const MicroBatch batch = global_batch(3, 3, 10);
  const std::vector<double> brute = brute_force_sq_norms(model, batch);
  const torch::Tensor ghost = tap_sq_norms(model, batch);
  REQUIRE(ghost.size(0) == 3);
  for (int64_t i = 0; i < 3; ++i) {
    CHECK(brute[i] > 0);
    CHECK(ghost[i].item<double>() == Approx(brute[static_cast<size_t>(i)]).epsilon(1e-9));
  }
}

LlamaModel fp64_llama(ModelConfig config) {
  ModelShardSpec spec;
  spec.fused_kernels = false;
  LlamaModel model(config, spec);
  model->initialize(5);
  model->to(torch::kFloat64);
  return model;
}

AdapterConfig adapter(const std::string& type) {
  AdapterConfig c;
  c.type = type;
  c.where = "adapters[0]";
  if (type == "lora") {
    c.scalars = {{"r", "3"}, {"alpha", "6"}};
    c.lists["target_modules"] = {"q_proj", "v_proj", "down_proj"};
  } else {
    c.scalars = {{"num_virtual_tokens", "3"}};
  }
  return c;
}

}  // namespace

TEST_CASE("per-example tap: a whole model's per-example gradient norms equal one backward each",
          "[privacy]") {
  TrainConfig config = equivalence_config(1, 1);
  SECTION("full fine-tuning: embedding, RMSNorm weights, every projection, the head") {
    LlamaModel model = fp64_llama(config.model);
    check_tap_against_brute_force(*model);
  }
  SECTION("LoRA factors, B non-zero") {
    LlamaModel model = fp64_llama(config.model);
    auto adapters = apply_adapters(*model, {adapter("lora")}, AdapterRegistry(), 5);
    model->to(torch::kFloat64);
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : trainable(*model))
      if (name.find("lora_B") != std::string::npos) p.normal_(0.0, 0.1);
    torch::AutoGradMode grad(true);
    check_tap_against_brute_force(*model);
  }
  SECTION("DeepSeek-V3 (MLA, MoE): LoRA on the attention and the dense and shared MLPs") {
    ModelShardSpec spec;
    spec.fused_kernels = false;
    DeepseekModel model(tiny_deepseek_v3(config.model), spec);
    model->initialize(5);
    AdapterConfig lora = adapter("lora");
    lora.lists["target_modules"] = {"q_proj",    "q_b_proj", "kv_a_proj_with_mqa",
                                    "kv_b_proj", "o_proj",   "up_proj"};
    auto adapters = apply_adapters(*model, {lora}, AdapterRegistry(), 5);
    model->to(torch::kFloat64);
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, p] : trainable(*model))
        if (name.find("lora_B") != std::string::npos) p.normal_(0.0, 0.1);
    }
    check_tap_against_brute_force(*model);
  }
  SECTION("prefix keys and values") {
    LlamaModel model = fp64_llama(config.model);
    auto adapters = apply_adapters(*model, {adapter("prefix")}, AdapterRegistry(), 5);
    model->to(torch::kFloat64);
    check_tap_against_brute_force(*model);
  }
}

TEST_CASE("per-example tap: parameters without an exact per-example norm are refused by name",
          "[privacy]") {
  TrainConfig config = equivalence_config(1, 1);
  const MicroBatch batch = global_batch(1, 2, 8);
  SECTION("a trained tied embedding is used twice") {
    config.model.tie_word_embeddings = true;
    LlamaModel model = fp64_llama(config.model);
    CHECK_THROWS_WITH(tap_sq_norms(*model, batch),
                      Catch::Contains("'model.embed_tokens.weight' is used twice"));
  }
  SECTION("MoE routers and routed experts see tokens, not examples") {
    DeepseekModel model(tiny_deepseek_v3(config.model));
    model->initialize(5);
    CHECK_THROWS_WITH(
        tap_sq_norms(*model, batch),
        Catch::Contains("without an example dimension") && Catch::Contains(".mlp.experts."));
  }
}

TEST_CASE("Poisson sampler: per-step draws, rank split with padding, resumable", "[privacy]") {
  const int64_t size = 1000;
  const double q = 0.02;
  PoissonSampler whole(size, 42, q, 0, 1, 4);
  // Every example's inclusion is an independent Bernoulli(q): the batch sizes average q * size.
  double total = 0;
  std::set<int64_t> seen;
  for (int64_t step = 0; step < 200; ++step) {
    const std::vector<int64_t> batch = whole.global_batch(step);
    total += static_cast<double>(batch.size());
    CHECK(std::is_sorted(batch.begin(), batch.end()));
    seen.insert(batch.begin(), batch.end());
  }
  CHECK(total / 200 == Approx(q * size).epsilon(0.05));  // 4000 draws: std of the mean ~1.6%
  CHECK(seen.size() > 950);
  CHECK(whole.global_batch(7) == PoissonSampler(size, 42, q, 0, 1, 4).global_batch(7));
  CHECK(whole.global_batch(7) != PoissonSampler(size, 43, q, 0, 1, 4).global_batch(7));
  // Two ranks: the same micro-batch count, every example once, padding rows after a rank's own.
  PoissonSampler rank0(size, 42, q, 0, 2, 4), rank1(size, 42, q, 1, 2, 4);
  for (int64_t step = 0; step < 20; ++step) {
    const auto a = rank0.next_step(), b = rank1.next_step();
    REQUIRE(a.size() == b.size());
    std::vector<int64_t> rows;
    for (const auto& micro : a) rows.insert(rows.end(), micro.begin(), micro.end());
    for (const auto& micro : b) rows.insert(rows.end(), micro.begin(), micro.end());
    std::vector<int64_t> examples;
    for (int64_t row : rows)
      if (row != kPaddingRow) examples.push_back(row);
    std::sort(examples.begin(), examples.end());
    CHECK(examples == whole.global_batch(step));
    for (const auto& micro : a) CHECK(micro.size() == 4);
  }
  // Resumed from its state, a sampler continues with the same batches.
  PoissonSampler resumed(size, 42, q, 1, 2, 4);
  resumed.deserialize(rank1.serialize());
  CHECK(rank1.serialize() == "poisson:20");
  CHECK(resumed.next_step() == rank1.next_step());
  CHECK_THROWS_WITH(resumed.deserialize("3:128"), Catch::Contains("is not a Poisson sampler's"));
  CHECK_THROWS_AS(PoissonSampler(size, 1, 0.0, 0, 1, 4), DataError);
}

TEST_CASE("privacy options: required keys, ranges, refused layouts", "[privacy]") {
  TrainConfig config = equivalence_config(1, 1);
  config.privacy.noise_multiplier = 1.0;
  CHECK_THROWS_WITH(config.validate(), Catch::Contains("privacy.max_grad_norm is required"));
  config.privacy.max_grad_norm = 1.0;
  config.validate();
  config.privacy.target_epsilon = 8;
  CHECK_THROWS_WITH(config.validate(), Catch::Contains("exactly one of noise_multiplier"));
  config.privacy.noise_multiplier = 0;
  config.privacy.accountant = "prv";
  CHECK_THROWS_WITH(config.validate(), Catch::Contains("privacy.accountant 'prv'"));
  config.privacy.accountant = "rdp";
  config.parallel.tp = 2;
  CHECK_THROWS_WITH(config.validate(), Catch::Contains("does not combine with parallel.tp > 1"));
  config.parallel.tp = 1;
  config.model_parallel.activation_checkpointing = 1;
  CHECK_THROWS_WITH(config.validate(), Catch::Contains("activation checkpointing"));
}

TEST_CASE("DP-SGD noise: with every gradient zero the update is the configured noise",
          "[privacy]") {
  TrainConfig config = equivalence_config(1, 1);
  config.optim.grad_clip = 0;
  config.privacy.max_grad_norm = 2.0;
  config.privacy.noise_multiplier = 1.5;
  config.privacy.noise_seed = 11;
  const double expected_batch = 4;
  const double stddev = 1.5 * 2.0 / expected_batch;
  auto make = [&] {
    auto trainer = std::make_unique<Trainer>(
        config, ProcessGroups::create(comm::make_local_communicator(), config.parallel),
        Logger(0, 1, LogLevel::kWarn));
    trainer->plan_privacy(0.01, expected_batch);
    return trainer;
  };
  auto trainer = make();
  MicroBatch empty = global_batch(0, 2, 16);
  empty.labels.fill_(kIgnoreIndex);  // no example: a Poisson step that drew nothing
  const StepResult result = trainer->train_step({empty});
  REQUIRE(result.privacy);
  CHECK(result.privacy->examples == 0);
  RdpAccountant accountant;
  accountant.step(1.5, 0.01);
  CHECK(result.privacy->epsilon == Approx(accountant.spent(1e-5).epsilon).epsilon(1e-12));
  // The stored gradient is pure noise.
  double count = 0, sum = 0, sum_sq = 0;
  for (const ParameterStateSlice& slice : trainer->engine_state_slices()) {
    const torch::Tensor g = slice.gradient.to(torch::kFloat64);
    count += static_cast<double>(g.numel());
    sum += g.sum().item<double>();
    sum_sq += g.pow(2).sum().item<double>();
  }
  REQUIRE(count > 30000);
  const double mean = sum / count, std = std::sqrt(sum_sq / count - mean * mean);
  CHECK(std::abs(mean) < 5 * stddev / std::sqrt(count));
  CHECK(std == Approx(stddev).epsilon(5 / std::sqrt(2 * count)));
  CHECK(result.grad_norm == Approx(stddev * std::sqrt(count)).epsilon(5 / std::sqrt(2 * count)));
  // The same key reproduces the step; the next step draws new noise.
  auto again = make();
  CHECK(again->train_step({empty}).grad_norm == result.grad_norm);
  CHECK(trainer->train_step({empty}).grad_norm != result.grad_norm);
}

TEST_CASE("privacy provenance: read back, absent, malformed", "[privacy]") {
  Provenance provenance;
  provenance.privacy = PrivacyProvenance{
      1.0, 0.8, 0.01, "poisson", "rdp", 5, 2.5, 1e-5, {{0.8, 0.01, 3}, {0.9, 0.01, 2}}};
  const std::optional<PrivacyProvenance> back =
      privacy_of_provenance(provenance.to_json(), "m.json");
  REQUIRE(back);
  CHECK(back->epsilon == 2.5);
  REQUIRE(back->history.size() == 2);
  CHECK(back->history[1].noise_multiplier == 0.9);
  CHECK(back->history[1].steps == 2);
  CHECK_FALSE(privacy_of_provenance(Provenance().to_json(), "m.json"));
  CHECK_FALSE(privacy_of_provenance("", "m.json"));
  CHECK_THROWS_WITH(privacy_of_provenance(R"({"privacy": {"max_grad_norm": 1}})", "m.json"),
                    Catch::Contains("m.json: malformed privacy provenance"));
}

TEST_CASE("DP-SGD resume: the accountant continues from the checkpoint's history", "[privacy]") {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("dst_dp_sgd_resume_" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove_all(dir);
  TrainConfig config = equivalence_config(1, 1);
  config.optim.grad_clip = 0;
  config.train.steps = 3;
  config.train.output_dir = dir;
  config.privacy.max_grad_norm = 1.0;
  config.privacy.noise_multiplier = 1.0;
  config.privacy.noise_seed = 3;
  auto make = [](const TrainConfig& c) {
    return std::make_unique<Trainer>(
        c, ProcessGroups::create(comm::make_local_communicator(), c.parallel),
        Logger(0, 1, LogLevel::kWarn));
  };
  const MicroBatch batch = global_batch(0, 2, 16);
  auto whole = make(config);
  whole->plan_privacy(0.01, 4);
  double uninterrupted = 0;
  for (int step = 0; step < 3; ++step) uninterrupted = whole->train_step({batch}).privacy->epsilon;
  auto first = make(config);
  first->plan_privacy(0.01, 4);
  first->train_step({batch});
  first->train_step({batch});
  const std::string saved = first->save_checkpoint("poisson:2");
  first->wait_for_checkpoint();
  auto resumed = make(config);
  CHECK(resumed->load_checkpoint(saved) == "poisson:2");
  resumed->plan_privacy(0.01, 4);
  const StepResult last = resumed->train_step({batch});
  CHECK(last.privacy->epsilon == Approx(uninterrupted).epsilon(1e-12));
  REQUIRE(resumed->privacy_provenance());
  CHECK(resumed->privacy_provenance()->history.size() == 1);
  CHECK(resumed->privacy_provenance()->history[0].steps == 3);
  // A checkpoint of a run without DP-SGD cannot continue privately.
  TrainConfig plain = config;
  plain.privacy = PrivacyOptions();
  plain.train.output_dir = dir + "/plain";
  auto public_run = make(plain);
  public_run->train_step({batch});
  const std::string public_checkpoint = public_run->save_checkpoint("0:2");
  public_run->wait_for_checkpoint();
  CHECK_THROWS_WITH(make(config)->load_checkpoint(public_checkpoint),
                    Catch::Contains("was trained 1 steps without DP-SGD"));
  std::filesystem::remove_all(dir);
}

// bf16 and fp16 training of the quickstart model against fp32 on the same seed and data:
// parameters in bf16/fp16, fp32 master weights and Adam moments, fp32 gradient reduction; the loss
// after 20 steps must be within 2% of the fp32 run's. fp16 runs with the dynamic loss scaler
// (fp16 storage and gradients, fp32 compute on CPU); an overflowing scale skips steps.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>

#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/byte_tokenizer.h"
#include "deepseek_train/data/distributed_sampler.h"
#include "deepseek_train/data/synthetic_corpus.h"
#include "deepseek_train/data/token_dataset.h"
#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/train/trainer.h"
#include "support/held_memory.h"

using namespace dst;

namespace {

TrainConfig quickstart_model(const std::string& dtype) {
  TrainConfig c;
  c.model.hidden_size = 128;
  c.model.intermediate_size = 352;
  c.model.num_hidden_layers = 4;
  c.model.num_attention_heads = 4;
  c.model.num_key_value_heads = 2;
  c.model.max_position_embeddings = 256;
  c.optim.lr = 3e-3;
  c.schedule.warmup_steps = 5;
  c.data.seq_len = 64;
  c.train.steps = 20;
  c.train.micro_batch_size = 8;
  c.precision.param_dtype = dtype;
  return c;
}

std::vector<double> train_losses(const TrainConfig& config) {
  Trainer trainer(config, ProcessGroups::create(comm::make_local_communicator(), {1, 1, 1}),
                  Logger(0, 1, LogLevel::kWarn));
  ByteTokenizer tokenizer;
  TokenDataset dataset(generate_synthetic_corpus(600, 11), tokenizer, config.data.seq_len,
                       "synthetic");
  DistributedSampler sampler(dataset.size(), 5, 0, 1, config.train.micro_batch_size, 1);
  std::vector<double> losses;
  for (int64_t step = 0; step < config.train.steps; ++step)
    losses.push_back(
        trainer.train_step({to_micro_batch(dataset.batch(sampler.next_step()[0]))}).loss);
  return losses;
}

// Measured, not derived from the config: after a step, the storages the trainer holds are 16-bit
// parameters and gradients (2 + 2 bytes per parameter), fp32 masters (4) and fp32 Adam moments
// (8), and the memory plan says the same.
void check_held_state(Trainer& trainer) {
  const int64_t psi = trainer.config().model.num_parameters();
  const int64_t seq = trainer.config().data.seq_len;
  const torch::Tensor tokens =
      torch::randint(0, trainer.config().model.vocab_size, {2, seq + 1}, torch::kInt64);
  trainer.train_step(
      {{tokens.narrow(1, 0, seq).contiguous(), tokens.narrow(1, 1, seq).contiguous()}});
  const dst::testing::HeldBytes held = dst::testing::measure_held_bytes(trainer);
  CHECK(held.parameters == 2 * psi);
  CHECK(held.gradients == 2 * psi);
  CHECK(held.master_weights == 4 * psi);
  CHECK(held.masters_are_fp32);
  CHECK(held.optimizer_moments == 8 * psi);
  const MemoryPlan plan = trainer.memory_plan();
  CHECK(plan.parameters == held.parameters);
  CHECK(plan.gradients == held.gradients);
  CHECK(plan.master_weights == held.master_weights);
  CHECK(plan.optimizer_moments == held.optimizer_moments);
}

}  // namespace

TEST_CASE("bf16 training follows fp32 within 2% after 20 steps", "[precision]") {
  const auto fp32 = train_losses(quickstart_model("fp32"));
  const auto bf16 = train_losses(quickstart_model("bf16"));
  WARN("loss after 20 steps: fp32 " << fp32.back() << ", bf16 " << bf16.back());
  CHECK(fp32.back() < fp32.front() - 1.0);  // it learned something
  CHECK(bf16.back() == Approx(fp32.back()).epsilon(0.02));
}

TEST_CASE("bf16 parameters keep fp32 master weights: the state held is 16 bytes per parameter",
          "[precision]") {
  TrainConfig config = quickstart_model("bf16");
  Trainer trainer(config, ProcessGroups::create(comm::make_local_communicator(), {1, 1, 1}),
                  Logger(0, 1, LogLevel::kWarn));
  for (const auto& [name, tensor] : trainer.named_parameters())
    CHECK(tensor.scalar_type() == torch::kBFloat16);
  check_held_state(trainer);
}

TEST_CASE("fp16 training with dynamic loss scaling follows fp32 within 2% after 20 steps",
          "[precision]") {
  const auto fp32 = train_losses(quickstart_model("fp32"));
  const auto fp16 = train_losses(quickstart_model("fp16"));
  WARN("loss after 20 steps: fp32 " << fp32.back() << ", fp16 " << fp16.back());
  CHECK(fp16.back() == Approx(fp32.back()).epsilon(0.02));

  Trainer trainer(quickstart_model("fp16"),
                  ProcessGroups::create(comm::make_local_communicator(), {1, 1, 1}),
                  Logger(0, 1, LogLevel::kWarn));
  for (const auto& [name, tensor] : trainer.named_parameters())
    CHECK(tensor.scalar_type() == torch::kFloat16);
  CHECK(trainer.loss_scaler().enabled());
  CHECK(trainer.loss_scaler().scale() == 65536.0);
  check_held_state(trainer);
}

TEST_CASE("fp16 overflow: the step is skipped, parameters are untouched, the scale backs off",
          "[precision]") {
  TrainConfig config = quickstart_model("fp16");
  // 2^40 times a per-token loss gradient of ~1e-3 is far beyond fp16's 65504: the first
  // gradients overflow to inf and the scale has to come down before any step applies.
  config.precision.loss_scaler.initial_scale = std::ldexp(1.0, 40);
  config.precision.loss_scaler.max_scale = std::ldexp(1.0, 40);
  config.precision.loss_scaler.backoff_factor = 0.25;
  Trainer trainer(config, ProcessGroups::create(comm::make_local_communicator(), {1, 1, 1}),
                  Logger(0, 1, LogLevel::kWarn));
  ByteTokenizer tokenizer;
  TokenDataset dataset(generate_synthetic_corpus(100, 11), tokenizer, config.data.seq_len,
                       "synthetic");
  const MicroBatch batch = to_micro_batch(dataset.batch({0, 1, 2, 3}));
  int64_t skipped = 0;
  bool applied = false;
  double expected_scale = config.precision.loss_scaler.initial_scale;
  for (int step = 0; step < 30 && !applied; ++step) {
    const auto before = trainer.full_parameters();
    const StepResult result = trainer.train_step({batch});
    CHECK(result.loss_scale == expected_scale);
    CHECK(std::isfinite(result.loss));
    applied = !result.skipped;
    if (result.skipped) {
      ++skipped;
      CHECK_FALSE(std::isfinite(result.grad_norm));
      expected_scale *= 0.25;
      const auto after = trainer.full_parameters();
      for (size_t i = 0; i < before.size(); ++i)
        CHECK(torch::equal(before[i].second, after[i].second));
    } else {
      CHECK(std::isfinite(result.grad_norm));
    }
    CHECK(trainer.loss_scaler().scale() == expected_scale);
  }
  CHECK(applied);
  CHECK(skipped >= 1);
  CHECK(trainer.loss_scaler().skipped_steps() == skipped);
}

// DP-SGD is layout-independent: the same seed, noise key and Poisson-style batches (a varying
// number of examples per step, padding rows after them) give the same losses, privacy reports
// and parameters on dp2 under DDP and ZeRO-1/2/3 as in a single process — LoRA and full
// fine-tuning, 5 steps, within 1e-6 relative (the reductions' order differs, so not bitwise) —
// and on 4 ranks as HSDP (dp_replicate 2 x dp_shard 2, ZeRO-1/3).
// Clipping is active (max_grad_norm below most examples' norms) and the noise is on.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/train/trainer.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

constexpr int64_t kRows = 2;          // rows per micro-batch
constexpr int64_t kMicroBatches = 2;  // per rank and step on dp2

// Step `step`'s global batch: 8 rows of which the last ones are padding (a Poisson draw of
// 8 - step % 4 examples).
MicroBatch dp_sgd_batch(int64_t step) {
  MicroBatch batch = global_batch(step, 2 * kMicroBatches * kRows, 16);
  const int64_t padding = step % 4;
  for (int64_t r = batch.labels.size(0) - padding; r < batch.labels.size(0); ++r)
    batch.labels[r].fill_(kIgnoreIndex);
  return batch;
}

TrainConfig dp_sgd_config(bool lora) {
  TrainConfig config = equivalence_config(2, kMicroBatches);
  config.optim.grad_clip = 0;
  config.optim.lr = lora ? 1e-2 : 1e-3;
  config.privacy.max_grad_norm = lora ? 0.05 : 1.0;
  config.privacy.noise_multiplier = 0.7;
  config.privacy.noise_seed = 2024;
  if (lora) {
    AdapterConfig adapter;
    adapter.type = "lora";
    adapter.where = "adapters[0]";
    adapter.scalars = {{"r", "4"}, {"alpha", "8"}};
    adapter.lists["target_modules"] = {"q_proj", "v_proj", "o_proj", "up_proj", "down_proj"};
    config.adapters = {adapter};
  }
  return config;
}

// Every rank of the world is a data-parallel rank: dp_shard = world / dp_replicate.
void check_dp_sgd_layout(bool lora, int zero_stage, int dp_replicate = 1) {
  auto world = dst::testing::world();
  const int data_parallel = world->size();
  const int64_t per_rank = 2 * kMicroBatches / data_parallel;  // micro-batches per rank
  REQUIRE(per_rank * data_parallel == 2 * kMicroBatches);
  TrainConfig config = dp_sgd_config(lora);
  config.parallel.dp = data_parallel / dp_replicate;
  config.parallel.dp_replicate = dp_replicate;
  config.train.grad_accum = per_rank;
  config.data_parallel.zero_stage = zero_stage;
  ProcessGroups groups = ProcessGroups::create(world, config.parallel);
  const int dp_rank = groups.coord().data_parallel_index(groups.dims());
  Trainer parallel(config, std::move(groups),
                   Logger(world->rank(), world->size(), LogLevel::kWarn));
  TrainConfig single_config = config;
  single_config.parallel = ParallelDims{1, 1, 1};
  single_config.data_parallel.zero_stage = 0;
  single_config.train.grad_accum = 2 * kMicroBatches;
  Trainer single(single_config,
                 ProcessGroups::create(comm::make_local_communicator(), single_config.parallel),
                 Logger(0, 1, LogLevel::kWarn));
  const double expected_batch = 8, sample_rate = 0.01;
  parallel.plan_privacy(sample_rate, expected_batch);
  single.plan_privacy(sample_rate, expected_batch);
  double clipped = 0;
  for (int64_t step = 0; step < config.train.steps; ++step) {
    const MicroBatch batch = dp_sgd_batch(step);
    const StepResult expected =
        single.train_step(rank_micro_batches(batch, 2 * kMicroBatches, kRows, 1, 0));
    const StepResult actual =
        parallel.train_step(rank_micro_batches(batch, per_rank, kRows, data_parallel, dp_rank));
    INFO("step " << step);
    CHECK(actual.loss == Approx(expected.loss).epsilon(1e-6));
    REQUIRE(actual.privacy);
    REQUIRE(expected.privacy);
    CHECK(actual.privacy->examples == 8 - step % 4);
    CHECK(actual.privacy->examples == expected.privacy->examples);
    CHECK(actual.privacy->clipped_fraction == expected.privacy->clipped_fraction);
    CHECK(actual.privacy->epsilon == expected.privacy->epsilon);
    CHECK(actual.grad_norm == Approx(expected.grad_norm).epsilon(1e-6));
    clipped += actual.privacy->clipped_fraction;
  }
  CHECK(clipped > 0);  // clipping took part
  const double worst = check_same_full_parameters(single, parallel, 1e-6);
  if (world->rank() == 0)
    WARN("DP-SGD " << (lora ? "LoRA" : "full") << " dp " << data_parallel << " (replicas "
                   << dp_replicate << ") ZeRO-" << zero_stage
                   << ": worst relative parameter difference " << worst);
}

}  // namespace

TEST_CASE("DP-SGD: LoRA on dp2 equals a single process under DDP and ZeRO-1/2/3", "[dpsgd]") {
  for (int stage : {0, 1, 2, 3}) {
    INFO("ZeRO stage " << stage);
    check_dp_sgd_layout(/*lora=*/true, stage);
  }
}

TEST_CASE("DP-SGD: full fine-tuning on dp2 equals a single process under DDP and ZeRO-3",
          "[dpsgd]") {
  for (int stage : {0, 3}) {
    INFO("ZeRO stage " << stage);
    check_dp_sgd_layout(/*lora=*/false, stage);
  }
}

TEST_CASE("DP-SGD: HSDP 2x2 (LoRA ZeRO-1/3, full ZeRO-3) equals a single process", "[dpsgd4]") {
  for (int stage : {1, 3}) {
    INFO("HSDP ZeRO stage " << stage);
    check_dp_sgd_layout(/*lora=*/true, stage, /*dp_replicate=*/2);
  }
  check_dp_sgd_layout(/*lora=*/false, 3, /*dp_replicate=*/2);
}

// ZeRO stages 1-3 against plain data parallelism (stage 0) on the same seed and data, with and
// without gradient accumulation: losses, gradient norms and every parameter after 5 AdamW steps,
// the bytes each step moves against the plan's formula, and the sharded model-state bytes.
// The stages reduce gradients by reduce-scatter instead of all-reduce; with 2 ranks a sum of two
// values is the same either way, with 4 ranks MPI may add in another order, so the comparison is
// within 1e-6 relative (||a - b|| / ||b|| per tensor) rather than bitwise.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/train/trainer.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

void check_stage(int stage, int64_t grad_accum, const std::string& offload = "none",
                 bool tied = false) {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  TrainConfig plain_config = equivalence_config(p, grad_accum);
  plain_config.model.tie_word_embeddings = tied;
  TrainConfig zero_config = plain_config;
  zero_config.data_parallel.zero_stage = stage;
  zero_config.optim.offload = offload;
  const int64_t mbs = plain_config.train.micro_batch_size;
  const int64_t rows = p * grad_accum * mbs;

  Logger quiet(r, p, LogLevel::kWarn);
  Trainer plain(plain_config, ProcessGroups::create(world, plain_config.parallel), quiet);
  Trainer zero(zero_config, ProcessGroups::create(world, zero_config.parallel), quiet);

  const MemoryPlan plan = zero.memory_plan();
  int64_t shard_elements = 0;
  for (const auto& unit : zero.sharding_unit_sizes()) shard_elements += unit / p;
  const int64_t psi = plain_config.model.num_parameters();
  if (stage == 3) CHECK(plan.model_state() == 16 * shard_elements);  // fp32: 4 + 4 + 8 bytes
  if (stage == 1) CHECK(plan.model_state() == 8 * psi + 8 * shard_elements);
  CHECK(shard_elements * p >= psi);
  CHECK(shard_elements * p < psi + static_cast<int64_t>(zero.sharding_unit_sizes().size()) * p);

  for (int64_t step = 0; step < plain_config.train.steps; ++step) {
    const MicroBatch batch = global_batch(step, rows, plain_config.data.seq_len);
    std::vector<MicroBatch> mine;
    for (int64_t k = 0; k < grad_accum; ++k) mine.push_back(rows_of(batch, (k * p + r) * mbs, mbs));
    const StepResult a = plain.train_step(mine);
    const StepResult b = zero.train_step(mine);
    INFO("stage " << stage << " grad_accum " << grad_accum << " step " << step);
    CHECK(b.loss == Approx(a.loss).epsilon(1e-6));
    CHECK(b.grad_norm == Approx(a.grad_norm).epsilon(1e-6));
    // Clipping is active at the first step: the sharded clipping equals the unsharded one.
    if (step == 0) CHECK(a.grad_norm > plain_config.optim.grad_clip);
    CHECK(b.comm_bytes == static_cast<uint64_t>(plan.comm_bytes_per_step()));
  }
  // Evaluation runs under every stage (ZeRO-3 gathers units one by one without gradients).
  const MicroBatch eval = global_batch(99, p * mbs, plain_config.data.seq_len);
  CHECK(zero.evaluate({rows_of(eval, r * mbs, mbs)}) ==
        Approx(plain.evaluate({rows_of(eval, r * mbs, mbs)})).epsilon(1e-6));

  auto expected = plain.full_parameters();
  auto actual = zero.full_parameters();
  REQUIRE(expected.size() == actual.size());
  double worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO(expected[i].first);
    CHECK(actual[i].first == expected[i].first);
    const double diff = relative_difference(actual[i].second, expected[i].second);
    worst = std::max(worst, diff);
    CHECK(diff <= 1e-6);
  }
  if (r == 0)
    WARN("ZeRO-" << stage << " tied=" << tied << " offload=" << offload << " dp=" << p
                 << " grad_accum=" << grad_accum << ": worst relative parameter difference vs DDP "
                 << worst);
}

}  // namespace

TEST_CASE("ZeRO-1 equals plain data parallel", "[zero]") {
  check_stage(1, 1);
  check_stage(1, 4);
}

TEST_CASE("ZeRO-2 equals plain data parallel", "[zero]") {
  check_stage(2, 1);
  check_stage(2, 4);
}

TEST_CASE("ZeRO-3 equals plain data parallel", "[zero]") {
  check_stage(3, 1);
  check_stage(3, 4);
}

TEST_CASE("ZeRO-2 with the CPU-offloaded optimizer equals plain data parallel", "[zero]") {
  check_stage(2, 1, "cpu");
}

TEST_CASE("ZeRO-3 with tied embeddings equals plain data parallel", "[zero]") {
  check_stage(3, 1, "none", /*tied=*/true);
  check_stage(3, 4, "none", /*tied=*/true);
}

TEST_CASE("ZeRO 1-3 in bf16: fp32 masters, fp32 reduce-scatter, bf16 gathers", "[zero]") {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  TrainConfig fp32_config = equivalence_config(p, 2);
  Logger quiet(r, p, LogLevel::kWarn);
  Trainer reference(fp32_config, ProcessGroups::create(world, fp32_config.parallel), quiet);
  std::vector<std::unique_ptr<Trainer>> stages;
  for (int stage = 1; stage <= 3; ++stage) {
    TrainConfig c = fp32_config;
    c.data_parallel.zero_stage = stage;
    c.precision.param_dtype = "bf16";
    stages.push_back(std::make_unique<Trainer>(c, ProcessGroups::create(world, c.parallel), quiet));
    for (const auto& [name, tensor] : stages.back()->named_parameters())
      CHECK(tensor.scalar_type() == torch::kBFloat16);
  }
  const int64_t mbs = fp32_config.train.micro_batch_size;
  for (int64_t step = 0; step < fp32_config.train.steps; ++step) {
    const MicroBatch batch = global_batch(step, p * 2 * mbs, fp32_config.data.seq_len);
    std::vector<MicroBatch> mine;
    for (int64_t k = 0; k < 2; ++k) mine.push_back(rows_of(batch, (k * p + r) * mbs, mbs));
    const StepResult expected = reference.train_step(mine);
    std::vector<StepResult> results;
    for (auto& trainer : stages) {
      results.push_back(trainer->train_step(mine));
      // Gradients reduce-scatter in fp32 (4 bytes), parameters all-gather in bf16 (2 bytes).
      CHECK(results.back().comm_bytes ==
            static_cast<uint64_t>(trainer->memory_plan().comm_bytes_per_step()));
    }
    INFO("step " << step);
    // bf16 rounding of parameters and activations: close to fp32, not equal.
    for (const StepResult& result : results)
      CHECK(result.loss == Approx(expected.loss).epsilon(0.02));
    // The stages do the same bf16 arithmetic; they differ only in when gradients are reduced.
    CHECK(results[1].loss == Approx(results[0].loss).epsilon(1e-3));
    CHECK(results[2].loss == Approx(results[1].loss).epsilon(1e-5));
  }
  const MemoryPlan plan = stages[2]->memory_plan();
  int64_t shard = 0;
  for (int64_t padded : stages[2]->sharding_unit_sizes()) shard += padded / p;
  CHECK(plan.model_state() == 16 * shard);  // bf16 params + grads (2 + 2) + fp32 master + moments
}

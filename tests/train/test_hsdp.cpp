// HSDP (dp_replicate x dp_shard): ZeRO-1/2/3 sharded over dp_shard with the reduced gradient
// shards all-reduced across dp_replicate, against plain data parallelism over the same four
// ranks on the same seed and data: losses, gradient norms, evaluation, every parameter after 5
// AdamW steps, and the bytes each step moves against the memory plan. The sums are grouped
// differently ((a + b) + (c + d) over two groups, MPI's own order over four), so parameters are
// compared within 1e-6 relative (||a - b|| / ||b|| per tensor), as ZeRO on 4 ranks is.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/train/trainer.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

// ep > 1: the tiny DeepSeek-V3 with its routed experts split over ep ranks of each dp_shard group
// (their shards span the shard group's ranks holding the same experts, summed across replicas).
void check_hsdp(int stage, int64_t grad_accum, int ep = 1) {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  REQUIRE(p == 4);
  TrainConfig plain_config =
      ep > 1 ? deepseek_equivalence_config(p, grad_accum) : equivalence_config(p, grad_accum);
  TrainConfig hsdp_config = plain_config;
  hsdp_config.parallel.ep = ep;
  hsdp_config.parallel.dp_replicate = 2;
  hsdp_config.parallel.dp = 2;
  hsdp_config.data_parallel.zero_stage = stage;
  const int64_t mbs = plain_config.train.micro_batch_size;
  const int64_t rows = p * grad_accum * mbs;

  Logger quiet(r, p, LogLevel::kWarn);
  Trainer plain(plain_config, ProcessGroups::create(world, plain_config.parallel), quiet);
  const ProcessGroups hsdp_groups = ProcessGroups::create(world, hsdp_config.parallel);
  // Rank order: dp_shard inside, replicas outside; data is split by the replica-major index.
  CHECK(hsdp_groups.coord().dp == r % 2);
  CHECK(hsdp_groups.coord().dp_replicate == r / 2);
  CHECK(hsdp_groups.coord().data_parallel_index(hsdp_config.parallel) == r);
  Trainer hsdp(hsdp_config, hsdp_groups, quiet);
  // Each rank holds half of the sharded state (not a quarter): shards span dp_shard only.
  int64_t shard_elements = 0;
  for (const auto& unit : hsdp.sharding_unit_sizes()) shard_elements += unit / 2;
  if (ep == 1) CHECK(shard_elements * 2 >= plain_config.model.num_parameters());

  const MemoryPlan plan = hsdp.memory_plan();
  for (int64_t step = 0; step < plain_config.train.steps; ++step) {
    const MicroBatch batch = global_batch(step, rows, plain_config.data.seq_len);
    const std::vector<MicroBatch> mine = rank_micro_batches(batch, grad_accum, mbs, p, r);
    const StepResult a = plain.train_step(mine);
    const StepResult b = hsdp.train_step(mine);
    INFO("HSDP 2x2 ZeRO-" << stage << " grad_accum " << grad_accum << " step " << step);
    CHECK(b.loss == Approx(a.loss).epsilon(1e-6));
    CHECK(b.grad_norm == Approx(a.grad_norm).epsilon(1e-6));
    const auto all_to_all = b.comm_bytes_by_op.find("all_to_all");
    const uint64_t routed = all_to_all == b.comm_bytes_by_op.end() ? 0 : all_to_all->second;
    CHECK(b.comm_bytes - routed == static_cast<uint64_t>(plan.comm_bytes_per_step()));
  }
  const MicroBatch eval = global_batch(99, p * mbs, plain_config.data.seq_len);
  CHECK(hsdp.evaluate({rows_of(eval, r * mbs, mbs)}) ==
        Approx(plain.evaluate({rows_of(eval, r * mbs, mbs)})).epsilon(1e-6));

  const double worst = check_same_full_parameters(plain, hsdp, 1e-6);
  if (r == 0)
    WARN("HSDP dp_replicate 2 x dp_shard 2" << (ep > 1 ? " x ep2 deepseek_v3" : "") << " ZeRO-"
                                            << stage << " grad_accum=" << grad_accum
                                            << ": worst relative parameter difference vs "
                                               "dp4 DDP "
                                            << worst);
}

}  // namespace

TEST_CASE("HSDP 2x2 at ZeRO-1, 2 and 3 equals plain data parallelism on 4 ranks", "[hsdp4]") {
  for (int stage : {1, 2, 3}) {
    check_hsdp(stage, 1);
    check_hsdp(stage, 2);
  }
}

TEST_CASE("HSDP 2x2 with ep2 (deepseek_v3) at ZeRO-1 and 3 equals plain data parallelism",
          "[hsdp4]") {
  check_hsdp(1, 2, /*ep=*/2);
  check_hsdp(3, 1, /*ep=*/2);
}

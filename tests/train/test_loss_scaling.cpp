// fp16 with dynamic loss scaling across data-parallel ranks: an inf injected into one gradient on
// one rank makes every rank skip the same step (the global gradient norm is non-finite on all of
// them), leaves the parameters untouched, halves the scale and counts the skipped step; the next
// step applies normally. Plain data parallel, ZeRO-2 and ZeRO-3.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <limits>
#include <memory>

#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/train/trainer.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

void check_injected_inf(int stage) {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  TrainConfig config = equivalence_config(p, /*grad_accum=*/1);
  config.data_parallel.zero_stage = stage;
  config.precision.param_dtype = "fp16";
  config.precision.loss_scaler.initial_scale = 1024;
  Trainer trainer(config, ProcessGroups::create(world, config.parallel),
                  Logger(r, p, LogLevel::kWarn));

  auto inject = std::make_shared<bool>(false);
  if (r == p - 1) {
    for (auto& [name, tensor] : trainer.named_parameters()) {
      if (name != "model.layers.0.mlp.up_proj.weight") continue;
      tensor.register_hook([inject](const torch::Tensor& grad) {
        return *inject ? torch::full_like(grad, std::numeric_limits<float>::infinity()) : grad;
      });
    }
  }
  const int64_t mbs = config.train.micro_batch_size;
  auto my_rows = [&](int64_t step) {
    return rows_of(global_batch(step, p * mbs, config.data.seq_len), r * mbs, mbs);
  };

  INFO("ZeRO stage " << stage);
  const StepResult first = trainer.train_step({my_rows(0)});
  CHECK_FALSE(first.skipped);
  CHECK(first.loss_scale == 1024);
  const auto before = trainer.full_parameters();

  *inject = true;
  const StepResult bad = trainer.train_step({my_rows(1)});
  *inject = false;
  CHECK(bad.skipped);  // on every rank, not only the one that saw the inf
  CHECK(bad.loss_scale == 1024);
  CHECK(trainer.loss_scaler().scale() == 512);
  CHECK(trainer.loss_scaler().skipped_steps() == 1);
  const auto after = trainer.full_parameters();
  REQUIRE(before.size() == after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    INFO(before[i].first);
    CHECK(torch::equal(before[i].second, after[i].second));
  }

  const StepResult next = trainer.train_step({my_rows(2)});
  CHECK_FALSE(next.skipped);
  CHECK(next.loss_scale == 512);
  const auto updated = trainer.full_parameters();
  CHECK_FALSE(torch::equal(updated[1].second, after[1].second));
}

}  // namespace

TEST_CASE("fp16: an inf on one rank skips the step on every rank", "[zero]") {
  check_injected_inf(0);
  check_injected_inf(2);
  check_injected_inf(3);
}

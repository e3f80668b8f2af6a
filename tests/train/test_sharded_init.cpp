// Sharded initialisation (train/initial_weights.h): the weights every layout starts from are
// exactly the single-process ones (compared with gathered copies, bit for bit), and under ZeRO-3
// building the trainer never allocates more than the rank's shards plus about one unit — no rank
// holds the whole model at any moment (counted with libtorch's CPU allocator hook).
#include <torch/torch.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>

#include "deepseek_train/core/log.h"
#include "deepseek_train/model/model_family.h"
#include "deepseek_train/train/trainer.h"
#include "support/held_memory.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

TrainConfig deeper_config(int p) {
  TrainConfig c = equivalence_config(p, 1);
  c.model.hidden_size = 64;
  c.model.intermediate_size = 160;
  c.model.num_hidden_layers = 6;
  return c;
}

// The single-process initial weights of `config`'s model, by name.
std::map<std::string, torch::Tensor> reference_weights(const TrainConfig& config) {
  std::shared_ptr<CausalLM> model = ModelFamilyRegistry().build(config.model, ModelShardSpec());
  model->initialize(config.train.seed);
  std::map<std::string, torch::Tensor> weights;
  for (const auto& item : model->named_parameters()) weights[item.key()] = item.value();
  return weights;
}

}  // namespace

TEST_CASE("sharded initialisation: every layout starts from the single-process weights", "[zero]") {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  Logger quiet(r, p, LogLevel::kWarn);
  struct Layout {
    int tp, pp, zero_stage;
    bool tied;
  };
  std::vector<Layout> layouts = {
      {1, 1, 0, false}, {1, 1, 1, false}, {1, 1, 3, false}, {1, 1, 3, true}};
  if (p >= 4) layouts.push_back({2, 1, 3, false});  // dp2 x tp2, vocabulary padding included
  if (p >= 4) layouts.push_back({1, 2, 3, true});   // dp2 x pp2, tied embedding copy
  for (const Layout& layout : layouts) {
    TrainConfig c = deeper_config(p);
    c.model.tie_word_embeddings = layout.tied;
    c.model.vocab_size = 259;  // not a multiple of tp: padded rows
    c.parallel.tp = layout.tp;
    c.parallel.pp = layout.pp;
    c.parallel.dp = p / (layout.tp * layout.pp);
    c.data_parallel.zero_stage = layout.zero_stage;
    INFO("tp" << layout.tp << " pp" << layout.pp << " dp" << c.parallel.dp << " ZeRO-"
              << layout.zero_stage << (layout.tied ? " tied" : ""));
    const auto expected = reference_weights(c);
    Trainer trainer(c, ProcessGroups::create(world, c.parallel), quiet);
    const auto actual = trainer.full_parameters();
    CHECK_FALSE(actual.empty());
    for (const auto& [name, tensor] : actual) {
      INFO(name);
      REQUIRE(expected.count(name) == 1);
      CHECK(torch::equal(tensor, expected.at(name)));
    }
  }
}

TEST_CASE("sharded initialisation: building a ZeRO-3 trainer allocates its shards plus one unit",
          "[zero]") {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  Logger quiet(r, p, LogLevel::kWarn);
  TrainConfig c = deeper_config(p);
  c.data_parallel.zero_stage = 3;
  AllocationCounter allocated;
  Trainer trainer(c, ProcessGroups::create(world, c.parallel), quiet);
  const int64_t peak = allocated.peak_bytes();
  const int64_t held = trainer.memory_plan().held_between_steps();
  const std::vector<int64_t> units = trainer.sharding_unit_sizes();
  const int64_t largest_unit = *std::max_element(units.begin(), units.end()) * 4;  // fp32 bytes
  const int64_t model_bytes = c.model.num_parameters() * 4;
  // While a unit is taken: its parameters, its flat parameter and its flat gradient (released at
  // once), one full tensor drawn for initialisation.
  const int64_t bound = held + 4 * largest_unit;
  if (r == 0)
    WARN("ZeRO-3 dp" << p << " construction: peak allocated " << peak << " B; shards " << held
                     << " B, largest unit " << largest_unit << " B, whole model " << model_bytes
                     << " B");
  CHECK(allocated.live_bytes() == held);
  CHECK(peak <= bound);
  // The bound is below what holding the whole model once more would take.
  CHECK(bound < held + model_bytes);
}

TEST_CASE(
    "ZeRO-2/3: a step's allocations peak within the plan's held bytes, activations and "
    "units in flight",
    "[zero]") {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  Logger quiet(r, p, LogLevel::kWarn);
  for (const char* dtype : {"fp32", "bf16"}) {
    for (int stage : {2, 3}) {
      for (bool tied : {false, true}) {
        TrainConfig c = deeper_config(p);
        c.data_parallel.zero_stage = stage;
        c.model.tie_word_embeddings = tied;
        c.precision.param_dtype = dtype;
        INFO(dtype << " ZeRO-" << stage << (tied ? " tied" : ""));
        Trainer trainer(c, ProcessGroups::create(world, c.parallel), quiet);
        const MemoryPlan plan = trainer.memory_plan();
        CHECK(plan.units_in_flight > 0);
        const int64_t mbs = c.train.micro_batch_size;
        for (int64_t step = 0; step < 2; ++step) {
          const MicroBatch batch = global_batch(step, p * mbs, c.data.seq_len);
          const std::vector<MicroBatch> mine = rank_micro_batches(batch, 1, mbs, p, r);
          AllocationCounter allocated;
          trainer.train_step(mine);
          const int64_t budget = plan.activations + plan.units_in_flight;
          if (r == 0 && step == 1)
            WARN(dtype << " ZeRO-" << stage << (tied ? " tied" : "") << " dp" << p
                       << ": step allocations peak " << allocated.peak_bytes()
                       << " B above what is held; plan: activations " << plan.activations
                       << " B + units in flight " << plan.units_in_flight << " B");
          CHECK(allocated.peak_bytes() <= budget);
          CHECK(allocated.live_bytes() == 0);
        }
      }
    }
  }
}

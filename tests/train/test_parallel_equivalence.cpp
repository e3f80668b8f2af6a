// The equivalence matrix of tensor, pipeline and data parallelism (with ZeRO) against a single
// process on the same seed and data: losses of 5 AdamW steps and every parameter afterwards
// within 1e-5 relative (||a - b|| / ||b||); different reduction orders make bitwise equality
// impossible (DeepSeek layouts: with the routing-bias update and the sequence-wise balance loss,
// whose value must agree too). Each rank runs the single-process reference itself (the model is
// tiny) and compares the parameters of the pipeline chunks it holds, gathered across tp. The bytes
// each step moves equal the memory plan's figure exactly. Also: activation checkpointing gives the
// same losses and gradients as without.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>

#include "deepseek_train/checkpoint/weights_file.h"
#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/train/trainer.h"
#include "support/held_memory.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

struct Layout {
  int dp = 1, tp = 1, pp = 1;
  std::string schedule = "1f1b";
  int virtual_stages = 1;
  int zero_stage = 0;
  int checkpointing = 0;
  bool tied = false;      // tie_word_embeddings (embedding and head on different stages under pp)
  bool deepseek = false;  // the tiny DeepSeek-V3 (MLA + MoE) instead of the Llama
  int ep = 1;             // expert parallelism (borrows from dp; deepseek only)
};

TrainConfig layout_config(const Layout& layout, int64_t micro_batches) {
  TrainConfig c = layout.deepseek ? deepseek_equivalence_config(layout.dp, micro_batches)
                                  : equivalence_config(layout.dp, micro_batches);
  c.model.num_hidden_layers = 4;
  c.parallel = {layout.dp, layout.tp, layout.pp};
  c.parallel.ep = layout.ep;
  c.data_parallel.zero_stage = layout.zero_stage;
  c.model_parallel.schedule = layout.schedule;
  c.model_parallel.virtual_stages = layout.virtual_stages;
  c.model_parallel.activation_checkpointing = layout.checkpointing;
  c.model.tie_word_embeddings = layout.tied;
  return c;
}

void check_layout(const Layout& layout) {
  auto world = dst::testing::world();
  REQUIRE(world->size() == layout.dp * layout.tp * layout.pp);
  const int64_t m = 4;  // micro-batches per rank per step (pipeline micro-batches)
  const TrainConfig config = layout_config(layout, m);
  Trainer parallel(config, ProcessGroups::create(world, config.parallel),
                   Logger(world->rank(), world->size(), LogLevel::kWarn));
  const int dp_rank = parallel.groups().coord().dp;

  Layout single_layout;
  single_layout.tied = layout.tied;
  single_layout.deepseek = layout.deepseek;
  TrainConfig single_config = layout_config(single_layout, layout.dp * m);
  Trainer single(single_config,
                 ProcessGroups::create(comm::make_local_communicator(), single_config.parallel),
                 Logger(0, 1, LogLevel::kWarn));

  const int64_t mbs = config.train.micro_batch_size;
  const int64_t rows = layout.dp * m * mbs;
  const MemoryPlan plan = parallel.memory_plan();
  if (layout.tp > 1) CHECK(plan.tensor_parallel_comm_bytes > 0);
  if (layout.pp > 1) CHECK(plan.pipeline_comm_bytes > 0);
  if (layout.checkpointing > 0) CHECK(plan.activations < plan.activations_without_checkpointing);
  INFO("dp " << layout.dp << " ep " << layout.ep << " tp " << layout.tp << " pp " << layout.pp
             << " " << layout.schedule << " v " << layout.virtual_stages << " ZeRO "
             << layout.zero_stage << " tied " << layout.tied << " deepseek " << layout.deepseek);
  for (int64_t step = 0; step < config.train.steps; ++step) {
    const MicroBatch batch = global_batch(step, rows, config.data.seq_len);
    const std::vector<MicroBatch> everything = rank_micro_batches(batch, layout.dp * m, mbs, 1, 0);
    const std::vector<MicroBatch> mine = rank_micro_batches(batch, m, mbs, layout.dp, dp_rank);
    const StepResult expected = single.train_step(everything);
    const StepResult actual = parallel.train_step(mine);
    INFO("step " << step);
    CHECK(actual.loss == Approx(expected.loss).epsilon(1e-5));
    CHECK(actual.grad_norm == Approx(expected.grad_norm).epsilon(1e-5));
    CHECK(actual.balance_loss == Approx(expected.balance_loss).epsilon(1e-5));
    CHECK((actual.balance_loss > 0) == layout.deepseek);
    if (step == 0) CHECK(expected.grad_norm > config.optim.grad_clip);  // clipping is active
    // Every byte the step moved (dp, tp and pp traffic and control scalars) is in the plan; the
    // routed tokens' all_to_all depends on the routing (the plan estimates it).
    const auto all_to_all = actual.comm_bytes_by_op.find("all_to_all");
    const uint64_t routed = all_to_all == actual.comm_bytes_by_op.end() ? 0 : all_to_all->second;
    CHECK((routed > 0) == (layout.ep > 1));
    CHECK((plan.expert_all_to_all_estimate > 0) == (layout.ep > 1));
    CHECK(actual.comm_bytes - routed == static_cast<uint64_t>(plan.comm_bytes_per_step()));
  }
  const MicroBatch eval = global_batch(77, layout.dp * mbs, config.data.seq_len);
  CHECK(parallel.evaluate({rows_of(eval, dp_rank * mbs, mbs)}) ==
        Approx(single.evaluate({eval})).epsilon(1e-5));

  std::map<std::string, torch::Tensor> reference;
  for (auto& [name, tensor] : single.full_parameters()) reference[name] = tensor;
  const auto params = parallel.full_parameters();
  CHECK(!params.empty());
  double worst = 0;
  for (const auto& [name, tensor] : params) {
    INFO(name);
    REQUIRE(reference.count(name) == 1);
    REQUIRE(tensor.sizes() == reference[name].sizes());
    const double diff = relative_difference(tensor, reference[name]);
    worst = std::max(worst, diff);
    CHECK(diff <= 1e-5);
  }
  // The exported weights hold the whole model (every stage, gathered across tp, unpadded).
  // Under the temporary directory (the same path on every rank of this one-machine test).
  const std::string directory =
      (std::filesystem::temp_directory_path() / "dst_parallel_equivalence_weights").string();
  const std::string path = parallel.save_weights(directory);
  if (world->rank() == 0) {
    const auto saved = load_weights_file(path);
    CHECK(saved.size() == reference.size());
    for (const auto& [name, tensor] : reference) {
      INFO(name);
      REQUIRE(saved.count(name) == 1);
      CHECK(relative_difference(saved.at(name), tensor) <= 1e-5);
    }
  }
  world->barrier()->wait();
  if (world->rank() == 0)
    WARN("dp" << layout.dp << " tp" << layout.tp << " pp" << layout.pp << " " << layout.schedule
              << " v" << layout.virtual_stages << " ZeRO-" << layout.zero_stage
              << (layout.tied ? " tied" : "") << (layout.deepseek ? " deepseek_v3" : "")
              << (layout.ep > 1 ? " ep" + std::to_string(layout.ep) : std::string())
              << ": worst relative parameter difference vs single process " << worst);
}

}  // namespace

TEST_CASE("3d: tp2 equals a single process", "[3d2]") { check_layout({1, 2, 1}); }

TEST_CASE("3d: pp2 with gpipe and 1f1b equals a single process", "[3d2]") {
  check_layout({1, 1, 2, "gpipe"});
  check_layout({1, 1, 2, "1f1b"});
}

TEST_CASE("3d: pp2 interleaved 1f1b (v=2) equals a single process", "[3d2]") {
  check_layout({1, 1, 2, "interleaved_1f1b", 2});
}

TEST_CASE("3d: activation checkpointing changes nothing (tp2)", "[3d2]") {
  check_layout({1, 2, 1, "1f1b", 1, 0, /*checkpointing=*/1});
}

TEST_CASE("3d: dp2 x tp2 equals a single process", "[3d4]") { check_layout({2, 2, 1}); }

TEST_CASE("3d: dp2 x pp2 with ZeRO-3 equals a single process", "[3d4]") {
  check_layout({2, 1, 2, "1f1b", 1, 3});
}

TEST_CASE("3d: tp2 x pp2 equals a single process", "[3d4]") { check_layout({1, 2, 2}); }

// Tied embeddings with the embedding on the first stage and the head on the last: the last stage
// keeps a copy whose gradient is summed with the embedding's, so both apply the same update.
TEST_CASE("3d: pp2 with tied embeddings equals a single process", "[3d2]") {
  Layout layout{1, 1, 2};
  layout.tied = true;
  check_layout(layout);
}

TEST_CASE("3d: dp2 x pp2 ZeRO-3 and pp4 ZeRO-1 with tied embeddings equal a single process",
          "[3d4]") {
  Layout dp2_pp2{2, 1, 2};
  dp2_pp2.tied = true;
  dp2_pp2.zero_stage = 3;
  check_layout(dp2_pp2);
  Layout pp4{1, 1, 4};
  pp4.tied = true;
  pp4.zero_stage = 1;
  check_layout(pp4);
}

// DeepSeek-V3: MLA's latent projections whole on every tp rank (their gradients summed through
// the tp region), routed experts whole, shared experts and the dense layer tensor-parallel.
TEST_CASE(
    "3d: deepseek_v3 under dp2 ZeRO-1/3, tp2 (checkpointed too) and pp2 equals a single "
    "process",
    "[3d2]") {
  for (int zero_stage : {1, 3}) {
    Layout dp2{2, 1, 1};
    dp2.zero_stage = zero_stage;
    dp2.deepseek = true;
    check_layout(dp2);
  }
  Layout tp2{1, 2, 1};
  tp2.deepseek = true;
  check_layout(tp2);
  tp2.checkpointing = 1;
  check_layout(tp2);
  Layout pp2{1, 1, 2};
  pp2.deepseek = true;
  check_layout(pp2);
}

TEST_CASE("3d: deepseek_v3 under dp2 x tp2 with ZeRO-3 equals a single process", "[3d4]") {
  Layout layout{2, 2, 1, "1f1b", 1, 3};
  layout.deepseek = true;
  check_layout(layout);
}

TEST_CASE("3d: dp2 x tp2 x pp2 with ZeRO-1 equals a single process", "[3d8]") {
  check_layout({2, 2, 2, "1f1b", 1, 1});
}

// Expert parallelism: the routed experts split over ep ranks borrowed from dp, their gradients
// reduced (and under ZeRO their state sharded) over the expert-data-parallel group, the tokens
// exchanged by all_to_all; the routing bias update on.
Layout expert_parallel(int dp, int ep, int zero_stage, int tp = 1, int pp = 1) {
  Layout layout{dp, tp, pp, "1f1b", 1, zero_stage};
  layout.deepseek = true;
  layout.ep = ep;
  return layout;
}

TEST_CASE("3d: deepseek_v3 with ep2 (DDP, ZeRO-1, ZeRO-3) equals a single process", "[ep2]") {
  for (int zero_stage : {0, 1, 3}) check_layout(expert_parallel(2, 2, zero_stage));
}

TEST_CASE(
    "3d: deepseek_v3 with dp4 x ep2 (DDP, ZeRO-3), tp2 x ep2, pp2 x ep2 equals a single process",
    "[ep4]") {
  check_layout(expert_parallel(4, 2, 0));
  check_layout(expert_parallel(4, 2, 3));
  check_layout(expert_parallel(2, 2, 3, /*tp=*/2));
  check_layout(expert_parallel(2, 2, 1, /*tp=*/1, /*pp=*/2));
}

// Under expert parallelism each rank holds its experts' state sharded over the expert group only:
// the storages behind parameters, gradients, masters and moments after two steps are the plan's
// (the dense engine's and the experts' group added), at every stage, fp32 and bf16.
TEST_CASE("3d: with ep2 each rank holds what the memory plan says (ZeRO 0-3, fp32 and bf16)",
          "[ep2]") {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  for (const char* dtype : {"fp32", "bf16"}) {
    for (int stage = 0; stage <= 3; ++stage) {
      INFO(dtype << " ZeRO-" << stage << " ep2");
      TrainConfig c = layout_config(expert_parallel(p, 2, stage), 2);
      c.precision.param_dtype = dtype;
      Trainer trainer(c, ProcessGroups::create(world, c.parallel), Logger(r, p, LogLevel::kWarn));
      const int64_t mbs = c.train.micro_batch_size;
      for (int64_t step = 0; step < 2; ++step) {
        const MicroBatch batch = global_batch(step, p * 2 * mbs, c.data.seq_len);
        trainer.train_step({rows_of(batch, r * mbs, mbs), rows_of(batch, (p + r) * mbs, mbs)});
      }
      const MemoryPlan plan = trainer.memory_plan();
      const HeldBytes held = measure_held_bytes(trainer);
      // The frozen routing bias (fp32 whatever the dtype) is among the model's tensors.
      int64_t frozen = 0;
      for (const auto& [name, tensor] : trainer.named_parameters())
        if (!tensor.requires_grad()) frozen += tensor.numel() * tensor.element_size();
      CHECK(held.parameters - frozen == plan.parameters);
      CHECK(held.gradients == plan.gradients);
      CHECK(held.master_weights == plan.master_weights);
      CHECK(held.optimizer_moments == plan.optimizer_moments);
    }
  }
}

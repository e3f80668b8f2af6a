// ZeRO stages 1-3 against plain data parallelism (stage 0) on the same seed and data, with and
// without gradient accumulation: losses, gradient norms and every parameter after 5 AdamW steps,
// the bytes each step moves against the plan's formula, and the sharded model-state bytes.
// The stages reduce gradients by reduce-scatter instead of all-reduce; with 2 ranks a sum of two
// values is the same either way, with 4 ranks MPI may add in another order, so the comparison is
// within 1e-6 relative (||a - b|| / ||b|| per tensor) rather than bitwise.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/train/trainer.h"
#include "support/held_memory.h"
#include "support/mpi_world.h"
#include "support/recording_communicator.h"
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
  CHECK(shard_elements * p >= psi);
  CHECK(shard_elements * p < psi + static_cast<int64_t>(zero.sharding_unit_sizes().size()) * p);

  for (int64_t step = 0; step < plain_config.train.steps; ++step) {
    const MicroBatch batch = global_batch(step, rows, plain_config.data.seq_len);
    const std::vector<MicroBatch> mine = rank_micro_batches(batch, grad_accum, mbs, p, r);
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

  const double worst = check_same_full_parameters(plain, zero, 1e-6);
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

// bf16 parameters under DDP (stage 0) and ZeRO 1-3, against each other and against fp32, after
// 5 steps with 2 micro-batches each. What differs between them, and so the tolerances:
//   - DDP rounds the all-reduced (fp32) gradient back into its bf16 gradient buffer; ZeRO keeps
//     it in fp32 shards. ZeRO-1 accumulates the micro-batches in its bf16 buffer before reducing,
//     ZeRO-2/3 reduce each micro-batch into the fp32 shard. So DDP, ZeRO-1 and ZeRO-2/3 see
//     gradients that differ by bf16 roundings (2^-9 relative each). Adam's m / sqrt(v) moves
//     little under such a change except where gradients are near eps; over 5 steps the bf16
//     parameters and their fp32 masters stay within one bf16 unit in the last place (2^-8)
//     relative per tensor (measured: at most about 2.3e-3, printed by the test).
//   - ZeRO-2 and ZeRO-3 do the same arithmetic on the same values in the same order (stage 3 only
//     gathers the parameters it already rounded): bit-identical parameters and masters.
//   - Against fp32 training, bf16 parameters and activations (8 significant bits) move the
//     parameters by about one bf16 unit over 5 steps: within 1% relative per tensor (measured:
//     at most about 4.3e-3).
TEST_CASE(
    "ZeRO 0-3 in bf16 against bf16 DDP and fp32: parameters, masters, reduce and gather dtypes",
    "[zero]") {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  TrainConfig fp32_config = equivalence_config(p, 2);
  Logger quiet(r, p, LogLevel::kWarn);
  Trainer reference(fp32_config, ProcessGroups::create(world, fp32_config.parallel), quiet);
  std::vector<std::unique_ptr<Trainer>> stages;
  std::vector<OpLog> logs;
  for (int stage = 0; stage <= 3; ++stage) {
    TrainConfig c = fp32_config;
    c.data_parallel.zero_stage = stage;
    c.precision.param_dtype = "bf16";
    logs.push_back(std::make_shared<std::vector<RecordedOp>>());
    auto recording = std::make_shared<RecordingCommunicator>(world, logs.back());
    stages.push_back(
        std::make_unique<Trainer>(c, ProcessGroups::create(recording, c.parallel), quiet));
    for (const auto& [name, tensor] : stages.back()->named_parameters())
      CHECK(tensor.scalar_type() == torch::kBFloat16);
  }
  const int64_t mbs = fp32_config.train.micro_batch_size;
  for (int64_t step = 0; step < fp32_config.train.steps; ++step) {
    const MicroBatch batch = global_batch(step, p * 2 * mbs, fp32_config.data.seq_len);
    const std::vector<MicroBatch> mine = rank_micro_batches(batch, 2, mbs, p, r);
    const StepResult expected = reference.train_step(mine);
    INFO("step " << step);
    for (int stage = 0; stage <= 3; ++stage) {
      logs[stage]->clear();
      const StepResult result = stages[stage]->train_step(mine);
      INFO("ZeRO-" << stage);
      CHECK(result.comm_bytes ==
            static_cast<uint64_t>(stages[stage]->memory_plan().comm_bytes_per_step()));
      CHECK(result.loss == Approx(expected.loss).epsilon(0.02));
      // The dtypes on the wire: gradients reduce in fp32 (DDP all-reduces a widened copy of
      // its bf16 buckets; ZeRO reduce-scatters fp32 into fp32 shards), parameters gather in bf16.
      int gradient_reductions = 0, gathers = 0;
      for (const RecordedOp& op : *logs[stage]) {
        // fp64 scalars are step bookkeeping (token count, loss sum, gradient norm).
        if (op.group != "dp" || op.input_type == torch::kFloat64) continue;
        INFO(comm::op_name(op.op) << " of " << op.input_elements << " elements");
        if (op.op == comm::OpType::kAllReduce || op.op == comm::OpType::kReduceScatter) {
          ++gradient_reductions;
          CHECK(op.input_type == torch::kFloat32);
          CHECK(op.output_type == torch::kFloat32);
        } else if (op.op == comm::OpType::kAllGather) {
          ++gathers;
          CHECK(op.input_type == torch::kBFloat16);
          CHECK(op.output_type == torch::kBFloat16);
        }
      }
      CHECK(gradient_reductions > 0);
      CHECK((gathers > 0) == (stage > 0));
    }
  }
  // Full parameters and fp32 masters of every stage against bf16 DDP, and against fp32.
  auto masters_of = [](Trainer& trainer) {
    std::map<std::string, std::vector<torch::Tensor>> masters;
    for (const ParameterStateSlice& s : trainer.engine_state_slices()) {
      CHECK(s.master.scalar_type() == torch::kFloat32);
      masters[s.name + ":" + std::to_string(s.begin)].push_back(s.master.clone());
    }
    return masters;
  };
  const auto fp32_params = reference.full_parameters();
  const auto ddp_params = stages[0]->full_parameters();
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> params;
  for (auto& trainer : stages) params.push_back(trainer->full_parameters());
  double worst_fp32 = 0, worst_ddp = 0, worst_master = 0;
  for (int stage = 0; stage <= 3; ++stage) {
    REQUIRE(params[stage].size() == fp32_params.size());
    for (size_t i = 0; i < fp32_params.size(); ++i) {
      INFO("ZeRO-" << stage << " " << fp32_params[i].first);
      CHECK(params[stage][i].first == fp32_params[i].first);
      const torch::Tensor mine = params[stage][i].second.to(torch::kFloat32);
      const double vs_fp32 = relative_difference(mine, fp32_params[i].second);
      const double vs_ddp = relative_difference(mine, ddp_params[i].second.to(torch::kFloat32));
      worst_fp32 = std::max(worst_fp32, vs_fp32);
      worst_ddp = std::max(worst_ddp, vs_ddp);
      CHECK(vs_fp32 <= 0.01);
      CHECK(vs_ddp <= 1.0 / 256);
      if (stage == 3) CHECK(torch::equal(params[3][i].second, params[2][i].second));
    }
  }
  // Masters: each ZeRO shard against the same element range of DDP's whole master; the masters
  // carry the same update differences the bf16 parameters show, so the same bound holds.
  const auto ddp_masters = masters_of(*stages[0]);
  for (int stage = 1; stage <= 3; ++stage) {
    for (const ParameterStateSlice& s : stages[stage]->engine_state_slices()) {
      INFO("ZeRO-" << stage << " master of " << s.name << " [" << s.begin << ", " << s.end << ")");
      const torch::Tensor whole = ddp_masters.at(s.name + ":0").front();
      const double diff = relative_difference(s.master, whole.narrow(0, s.begin, s.end - s.begin));
      worst_master = std::max(worst_master, diff);
      CHECK(diff <= 1.0 / 256);
    }
  }
  if (r == 0)
    WARN("bf16 dp" << p
                   << " after 5 steps, worst relative difference per tensor: parameters vs "
                      "fp32 "
                   << worst_fp32 << ", vs bf16 DDP " << worst_ddp << "; masters vs bf16 DDP "
                   << worst_master);
  const auto stage2 = stages[2]->engine_state_slices();
  const auto stage3 = stages[3]->engine_state_slices();
  REQUIRE(stage2.size() == stage3.size());
  for (size_t i = 0; i < stage2.size(); ++i) {
    INFO(stage2[i].name);
    CHECK(torch::equal(stage2[i].master, stage3[i].master));
    CHECK(torch::equal(stage2[i].exp_avg_sq, stage3[i].exp_avg_sq));
  }
}

// What each rank holds after two steps — measured from the storages behind its parameters,
// gradients, masters and moments, and from the bytes the CPU allocator handed out and did not get
// back — against the memory plan, for ZeRO 0-3 at fp32 and bf16. A stage that kept full optimizer
// state, or bf16 training without fp32 masters, fails here.
TEST_CASE("ZeRO 0-3 at fp32 and bf16: what each rank holds is what the memory plan says",
          "[zero]") {
  auto world = dst::testing::world();
  const int p = world->size(), r = world->rank();
  Logger quiet(r, p, LogLevel::kWarn);
  for (const char* dtype : {"fp32", "bf16"}) {
    for (int stage = 0; stage <= 3; ++stage) {
      INFO(dtype << " ZeRO-" << stage << " on " << p << " ranks");
      TrainConfig c = equivalence_config(p, 2);
      c.model.hidden_size = 64;
      c.model.intermediate_size = 160;
      c.data_parallel.zero_stage = stage;
      c.precision.param_dtype = dtype;
      const int64_t mbs = c.train.micro_batch_size;
      std::vector<std::vector<MicroBatch>> steps;
      for (int64_t step = 0; step < 2; ++step) {
        const MicroBatch batch = global_batch(step, p * 2 * mbs, c.data.seq_len);
        steps.push_back({rows_of(batch, r * mbs, mbs), rows_of(batch, (p + r) * mbs, mbs)});
      }
      ProcessGroups groups = ProcessGroups::create(world, c.parallel);
      AllocationCounter allocated;
      {
        Trainer trainer(c, groups, quiet);
        for (const auto& micro_batches : steps) trainer.train_step(micro_batches);
        const MemoryPlan plan = trainer.memory_plan();
        const HeldBytes held = measure_held_bytes(trainer);
        CHECK(held.parameters == plan.parameters);
        CHECK(held.gradients == plan.gradients);
        CHECK(held.master_weights == plan.master_weights);
        CHECK(held.optimizer_moments == plan.optimizer_moments);
        CHECK(held.masters_are_fp32);
        if (std::string(dtype) == "bf16") CHECK(held.master_weights > 0);
        // Everything the trainer allocated through libtorch and still holds between steps is
        // the engines' buffers: nothing else stays (measured equal, byte for byte).
        const int64_t live = allocated.live_bytes();
        CHECK(live == plan.held_between_steps());
        if (r == 0)
          WARN(dtype << " ZeRO-" << stage << " dp" << p << ": plan " << plan.held_between_steps()
                     << " B, allocated and held " << live << " B");
      }
      CHECK(allocated.live_bytes() == 0);  // the trainer returns everything it allocated
    }
  }
}

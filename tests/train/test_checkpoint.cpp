// Sharded checkpoints across layouts: 10 uninterrupted steps equal 5 steps + save + resume + 5
// steps bit-exactly (losses, parameters, optimizer state, the RNG state) for plain dp, each ZeRO
// stage, tp and pp; an async save holds byte-for-byte the tensors of a synchronous one; a
// checkpoint saved under one layout resumes under others (a single process included) with the
// continued losses within 1e-6 of the unresharded continuation.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>

#include "deepseek_train/checkpoint/hf_interop.h"
#include "deepseek_train/checkpoint/sharded_checkpoint.h"
#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/train/trainer.h"
#include "support/mpi_world.h"
#include "support/shared_data.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

struct Layout {
  int dp = 1, tp = 1, pp = 1;
  int zero_stage = 0;
  std::string precision = "fp32";
  bool tied = false;
  int dp_replicate = 1;  // HSDP replicas (dp is then dp_shard)
  int ep = 1;            // expert parallelism (the tiny DeepSeek-V3 when ep is set)
  bool deepseek = false;
};

Layout deepseek_layout(int dp, int ep, int zero_stage, int tp = 1, int pp = 1) {
  Layout layout{dp, tp, pp, zero_stage};
  layout.ep = ep;
  layout.deepseek = true;
  return layout;
}

std::string describe(const Layout& l) {
  return (l.dp_replicate > 1 ? "dp_replicate" + std::to_string(l.dp_replicate) + " " : "") + "dp" +
         std::to_string(l.dp) + " tp" + std::to_string(l.tp) + " pp" + std::to_string(l.pp) +
         " ZeRO-" + std::to_string(l.zero_stage) + " " + l.precision + (l.tied ? " tied" : "") +
         (l.deepseek ? " deepseek_v3 ep" + std::to_string(l.ep) : "");
}

constexpr int64_t kMicroBatchesPerStep = 4;  // global, split over dp
constexpr int64_t kSteps = 10;

TrainConfig config_for(const Layout& layout, const std::string& output_dir) {
  const int data_parallel = layout.dp_replicate * layout.dp;
  const int64_t micro_batches = kMicroBatchesPerStep / data_parallel;
  TrainConfig c = layout.deepseek ? deepseek_equivalence_config(layout.dp, micro_batches)
                                  : equivalence_config(layout.dp, micro_batches);
  c.parallel = {layout.dp, layout.tp, layout.pp, layout.dp_replicate};
  c.parallel.ep = layout.ep;
  c.data_parallel.zero_stage = layout.zero_stage;
  c.precision.param_dtype = layout.precision;
  c.model.tie_word_embeddings = layout.tied;
  c.train.steps = kSteps;
  c.train.output_dir = output_dir;
  return c;
}

std::unique_ptr<Trainer> make_trainer(const Layout& layout, const std::string& output_dir,
                                      bool single_process = false) {
  const TrainConfig config = config_for(layout, output_dir);
  auto world = single_process ? comm::make_local_communicator() : dst::testing::world();
  return std::make_unique<Trainer>(config, ProcessGroups::create(world, config.parallel),
                                   Logger(world->rank(), world->size(), LogLevel::kWarn));
}

// This rank's micro-batches of global step `step`.
std::vector<MicroBatch> batches_of(Trainer& trainer, int64_t step) {
  const ParallelDims& dims = trainer.groups().dims();
  const int dp = dims.data_parallel_size(),
            dp_rank = trainer.groups().coord().data_parallel_index(dims);
  const int64_t mbs = trainer.config().train.micro_batch_size;
  const MicroBatch batch =
      global_batch(step, kMicroBatchesPerStep * mbs, trainer.config().data.seq_len);
  return rank_micro_batches(batch, kMicroBatchesPerStep / dp, mbs, dp, dp_rank);
}

std::vector<double> run_steps(Trainer& trainer, int64_t from, int64_t to) {
  std::vector<double> losses;
  for (int64_t s = from; s < to; ++s)
    losses.push_back(trainer.train_step(batches_of(trainer, s)).loss);
  return losses;
}

std::string fresh_dir(const std::string& name) {
  auto world = dst::testing::world();
  const std::string dir = "checkpoint_test_" + name;
  if (world->rank() == 0) std::filesystem::remove_all(dir);
  world->barrier()->wait();
  return dir;
}

// Resumes the same layout from a step-5 checkpoint and checks bit-exactness against 10 straight
// steps; with `async`, also that the async checkpoint equals a synchronous one.
void check_bit_exact_resume(const Layout& layout) {
  INFO(describe(layout));
  const std::string dir = fresh_dir("exact");
  auto straight = make_trainer(layout, dir + "/straight");
  const std::vector<double> expected = run_steps(*straight, 0, kSteps);

  auto first = make_trainer(layout, dir + "/resumed");
  run_steps(*first, 0, 5);
  torch::rand({4});  // the generator has moved before the save
  const std::string saved = first->save_checkpoint("0:40");
  const torch::Tensor random_expected = torch::rand({4});
  first.reset();
  torch::rand({7});  // moves the generator on
  auto second = make_trainer(layout, dir + "/resumed");
  CHECK(second->load_checkpoint(saved) == "0:40");
  CHECK(torch::equal(torch::rand({4}), random_expected));  // the RNG state came back
  CHECK(second->step() == 5);
  const std::vector<double> continued = run_steps(*second, 5, kSteps);
  for (int64_t s = 5; s < kSteps; ++s) {
    INFO("step " << s + 1);
    CHECK(continued[s - 5] == expected[s]);  // bit-exact
  }
  // Parameters and optimizer state, piece by piece.
  const auto a = straight->state_pieces(), b = second->state_pieces();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].tensor << " " << a[i].kind);
    CHECK(a[i].tensor == b[i].tensor);
    CHECK(torch::equal(a[i].data, b[i].data));
  }
}

}  // namespace

TEST_CASE("checkpoint: resume is bit-exact for dp and every ZeRO stage", "[ckpt2]") {
  for (int stage : {0, 1, 2, 3}) check_bit_exact_resume(Layout{2, 1, 1, stage});
  check_bit_exact_resume(Layout{2, 1, 1, 3, "bf16"});
}

TEST_CASE("checkpoint: resume is bit-exact for deepseek_v3 with ep2 (DDP, ZeRO-3)", "[ckpt2]") {
  check_bit_exact_resume(deepseek_layout(2, 2, 0));
  check_bit_exact_resume(deepseek_layout(2, 2, 3));
}

TEST_CASE("checkpoint: resume is bit-exact for tp2 and pp2 (tied)", "[ckpt2]") {
  check_bit_exact_resume(Layout{1, 2, 1, 0});
  Layout pp{1, 1, 2, 0};
  pp.tied = true;
  check_bit_exact_resume(pp);
}

TEST_CASE("checkpoint: async save writes the same tensors as a synchronous one", "[ckpt2]") {
  const Layout layout{2, 1, 1, 2};
  const std::string dir = fresh_dir("async");
  TrainConfig config = config_for(layout, dir + "/sync");
  auto world = dst::testing::world();
  Trainer sync_trainer(config, ProcessGroups::create(world, config.parallel),
                       Logger(world->rank(), world->size(), LogLevel::kWarn));
  config.train.output_dir = dir + "/async";
  config.checkpoint.async = true;
  Trainer async_trainer(config, ProcessGroups::create(world, config.parallel),
                        Logger(world->rank(), world->size(), LogLevel::kWarn));
  run_steps(sync_trainer, 0, 3);
  run_steps(async_trainer, 0, 3);
  const std::string sync_dir = sync_trainer.save_checkpoint("0:24");
  const std::string async_dir = async_trainer.save_checkpoint("0:24");
  run_steps(async_trainer, 3, 4);  // training goes on while the file is written
  async_trainer.wait_for_checkpoint();
  if (world->rank() == 0) {
    CheckpointReader s(sync_dir, std::nullopt), a(async_dir, std::nullopt);
    REQUIRE(s.tensor_names() == a.tensor_names());
    for (const std::string& name : s.tensor_names())
      for (const char* kind : {"master", "exp_avg", "exp_avg_sq", "rng"}) {
        if (!s.has(name, kind)) continue;
        INFO(name << " " << kind);
        CHECK(torch::equal(s.read_full(name, kind), a.read_full(name, kind)));
      }
    CHECK(a.info().step == 3);
  }
  world->barrier()->wait();
}

namespace {

// After loading under a new layout nothing has been computed yet, so the state must be the saved
// one bit for bit: every gathered parameter, and every fp32 master and Adam moment (the resumed
// trainer saves again at once; the two checkpoints, read back whole, are compared tensor by
// tensor). Then 5 further steps follow the unresharded continuation within 1e-6.
// `tensors`: the model's tensor count in the checkpoint, `frozen` of them without moments.
void check_resumes_resharded(const Layout& saved_layout,
                             const std::vector<std::pair<Layout, bool>>& layouts, size_t tensors,
                             size_t frozen = 0) {
  auto world = dst::testing::world();
  REQUIRE(world->size() == 4);
  const std::string dir = fresh_dir("reshard");
  auto saver = make_trainer(saved_layout, dir + "/saved");
  run_steps(*saver, 0, 5);
  const std::string saved = saver->save_checkpoint("0:40");
  saver->wait_for_checkpoint();
  const auto saved_parameters = saver->full_model_on_rank0();
  const std::vector<double> reference = run_steps(*saver, 5, kSteps);
  saver.reset();

  auto check = [&](const Layout& layout, bool single_process) {
    INFO("resumed as " << describe(layout) << (single_process ? " (single process)" : ""));
    const std::string out = dir + "/resumed-" + describe(layout) +
                            (single_process ? "-rank" + std::to_string(world->rank()) : "");
    auto trainer = make_trainer(layout, out, single_process);
    trainer->load_checkpoint(saved);
    CHECK(trainer->step() == 5);
    const auto parameters = trainer->full_model_on_rank0();
    const std::string again = trainer->save_checkpoint("0:40");
    trainer->wait_for_checkpoint();
    if (world->rank() == 0) {
      CHECK(parameters.size() == saved_parameters.size());
      for (size_t i = 0; i < std::min(parameters.size(), saved_parameters.size()); ++i) {
        INFO(parameters[i].first);
        CHECK(parameters[i].first == saved_parameters[i].first);
        CHECK(torch::equal(parameters[i].second, saved_parameters[i].second));
      }
      CheckpointReader original(saved, std::nullopt), resaved(again, std::nullopt);
      // The model's tensors; the per-rank RNG states ("rng.*") follow the world size.
      auto model_tensors = [](const CheckpointReader& reader) {
        std::vector<std::string> names;
        for (const std::string& name : reader.tensor_names())
          if (name.rfind("rng.", 0) != 0) names.push_back(name);
        return names;
      };
      const std::vector<std::string> names = model_tensors(original);
      CHECK(model_tensors(resaved) == names);
      int compared = 0;
      for (const std::string& name : names)
        for (const char* kind : {"master", "exp_avg", "exp_avg_sq", "param"}) {
          INFO(name << " " << kind);
          CHECK(resaved.has(name, kind) == original.has(name, kind));
          if (!original.has(name, kind) || !resaved.has(name, kind)) continue;
          CHECK(torch::equal(resaved.read_full(name, kind), original.read_full(name, kind)));
          ++compared;
        }
      CHECK(names.size() == tensors);
      // fp32: master and two moments (frozen tensors: the master only).
      CHECK(compared == 3 * static_cast<int>(names.size()) - 2 * static_cast<int>(frozen));
      CHECK(resaved.info().step == 5);
    }
    const std::vector<double> losses = run_steps(*trainer, 5, kSteps);
    REQUIRE(losses.size() == 5);
    double worst = 0;
    for (size_t i = 0; i < losses.size(); ++i) {
      const double rel = std::abs(losses[i] - reference[i]) / std::abs(reference[i]);
      worst = std::max(worst, rel);
      CHECK(rel <= 1e-6);
    }
    if (world->rank() == 0)
      WARN("resumed " << describe(saved_layout) << " as " << describe(layout)
                      << (single_process ? " (single process)" : "")
                      << ": worst relative loss difference " << worst);
    world->barrier()->wait();
  };
  for (const auto& [layout, single_process] : layouts) check(layout, single_process);
}

}  // namespace

TEST_CASE("checkpoint: a checkpoint resumes under other layouts and a single process", "[ckpt4]") {
  // Saved under dp2 x tp2 with ZeRO-1; the tensors: embedding, 9 per layer in 2 layers, norm, head.
  check_resumes_resharded(Layout{2, 2, 1, 1},
                          {{Layout{1, 1, 1, 0}, /*single_process=*/true},
                           {Layout{4, 1, 1, 3}, false},
                           {Layout{1, 2, 2, 0}, false},
                           {Layout{2, 1, 2, 2}, false},
                           // HSDP: two replicas of ZeRO-3 over two ranks (the first replica
                           // writes the sharded state).
                           {Layout{2, 1, 1, 3, "fp32", false, /*dp_replicate=*/2}, false}},
                          21);
}

TEST_CASE("checkpoint: a deepseek_v3 checkpoint saved with ep2 resumes without ep and with others",
          "[ckpt4]") {
  // Saved under dp4 x ep2 with ZeRO-1 (each expert's state on the two ranks of its edp group).
  // Tensors: embedding, norm and head; the dense layer 0: 2 norms, MLA's 7, the MLP's 3; the MoE
  // layer 1: 2 norms, MLA's 7, the router's weight and (frozen) correction bias, 8 experts x 3,
  // the shared experts' 3.
  check_resumes_resharded(deepseek_layout(4, 2, 1),
                          {{deepseek_layout(1, 1, 0), /*single_process=*/true},
                           {deepseek_layout(4, 1, 3), false},
                           {deepseek_layout(4, 4, 0), false},
                           {deepseek_layout(2, 2, 3, /*tp=*/2), false},
                           {deepseek_layout(2, 2, 2, /*tp=*/1, /*pp=*/2), false}},
                          3 + 12 + 38, /*frozen=*/1);
}

TEST_CASE("checkpoint: a Hugging Face model imports into tp2 slices exactly", "[ckpt2]") {
  const std::string model_dir = shared_data("models/tiny-llama-2").string();
  HfModelReader hf(model_dir);
  TrainConfig c = equivalence_config(1, 2);
  c.model = hf.config();
  c.parallel = {1, 2, 1};
  c.train.init_from = model_dir;
  auto world = dst::testing::world();
  Trainer trainer(c, ProcessGroups::create(world, c.parallel),
                  Logger(world->rank(), world->size(), LogLevel::kWarn));
  const auto params = trainer.full_parameters();
  CHECK(params.size() == 12);  // embedding, 9 in the layer, norm, head
  for (const auto& [name, tensor] : params) {
    INFO(name);
    CHECK(torch::equal(tensor, hf.read_rows(name).view(tensor.sizes())));
  }
}

TEST_CASE("checkpoint: state holding NaN is never saved; the previous checkpoint stays",
          "[ckpt2]") {
  // ZeRO-2 on every rank of the world: one rank's poisoned master shard must stop all of them.
  const Layout layout{2, 1, 1, 2};
  const std::string dir = fresh_dir("nonfinite");
  auto trainer = make_trainer(layout, dir);
  trainer->train_step(batches_of(*trainer, 0));
  const std::string good = trainer->save_checkpoint("");
  trainer->wait_for_checkpoint();
  trainer->train_step(batches_of(*trainer, 1));
  if (trainer->groups().world().rank() == trainer->groups().world().size() - 1) {
    for (auto& piece : trainer->state_pieces())
      if (piece.kind == "master") {
        piece.data.view({-1})[0].fill_(std::numeric_limits<float>::quiet_NaN());
        break;
      }
  }
  CHECK_THROWS_WITH(trainer->save_checkpoint(""),
                    Catch::Contains("refusing to save the checkpoint of step 2") &&
                        Catch::Contains("holds NaN or Inf; the previous checkpoint is unchanged"));
  CHECK(resolve_checkpoint(trainer->checkpoint_root(), "latest") == good);
  CHECK_FALSE(
      std::filesystem::exists(std::filesystem::path(trainer->checkpoint_root()) / "step-2"));
}

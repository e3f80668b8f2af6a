// The model-family seam: a second family, a toy residual-MLP language model defined only in this
// file, registers itself in a ModelFamilyRegistry and trains through the ordinary Trainer loop —
// ZeRO-3 over dp2 and tensor parallelism over tp2 — matching a single process on the same seed
// and data (within 1e-5, as every parallel layout), with nothing outside this file knowing it.
//
// The toy model: token embedding -> num_hidden_layers blocks h + W_down relu(W_up h) -> LM head,
// built from the tensor-parallel layers (vocab-parallel embedding and head, column-parallel up,
// row-parallel down), so its splits, full shapes, initialisation and gathering are the generic
// CausalLM ones.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/model/model_family.h"
#include "deepseek_train/tensor_parallel/parallel_layers.h"
#include "deepseek_train/train/trainer.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

class ToyBlockImpl : public torch::nn::Module {
 public:
  ToyBlockImpl(const ModelConfig& c, const comm::CommunicatorPtr& tp) {
    up = register_module("up", ColumnParallelLinear(c.hidden_size, c.intermediate_size, tp));
    down = register_module("down", RowParallelLinear(c.intermediate_size, c.hidden_size, tp));
  }
  torch::Tensor forward(const torch::Tensor& h) { return h + down(torch::relu(up(h))); }
  ColumnParallelLinear up{nullptr};
  RowParallelLinear down{nullptr};
};
TORCH_MODULE(ToyBlock);

class ToyMlpLM : public CausalLM {
 public:
  // `record_splits` false: a family that forgot record_tp_splits (refused under tp).
  ToyMlpLM(const ModelConfig& config, ModelShardSpec shard, bool record_splits = true)
      : CausalLM(config, shard.tp_group) {
    DST_CHECK(shard.chunks.size() <= 1, ConfigError, "toy_mlp: no pipeline parallelism");
    chunks_ = {whole_model(config.num_hidden_layers)};
    embed = register_module(
        "embed", VocabParallelEmbedding(config.vocab_size, config.hidden_size, tp_group()));
    for (int64_t i = 0; i < config.num_hidden_layers; ++i)
      blocks.push_back(
          register_module("blocks_" + std::to_string(i), ToyBlock(config, tp_group())));
    head = register_module("head", ColumnParallelLinear(ColumnParallelLinearImpl::vocab_head(
                                       config.hidden_size, config.vocab_size, tp_group())));
    if (record_splits) record_tp_splits();
  }

  torch::Tensor forward_chunk(int, const torch::Tensor& ids) override {
    int unit = 0;
    torch::Tensor h = run_unit(unit++, [&] { return embed(ids); });
    for (ToyBlock& block : blocks) {
      const torch::Tensor input = h;
      h = run_unit(unit++, [&] { return block(input); });
    }
    const torch::Tensor last = h;
    return run_unit(unit, [&] { return head(last); });
  }
  torch::Tensor loss_sum(const torch::Tensor& logits, const torch::Tensor& labels) const override {
    if (!tp_group()) return cross_entropy_sum(logits, labels);
    return vocab_parallel_cross_entropy_sum(logits, labels, embed->shard(), *tp_group(),
                                            kIgnoreIndex);
  }
  const std::vector<LayerChunk>& chunks() const override { return chunks_; }
  int units_of_chunk(const LayerChunk& chunk) const override {
    return static_cast<int>(chunk.end - chunk.begin) + 2;
  }
  int unit_of_parameter(const std::string& name) const override {
    if (is_embedding(name)) return 0;
    if (name.rfind("head.", 0) == 0) return static_cast<int>(blocks.size()) + 1;
    return 1 + std::stoi(name.substr(std::string("blocks_").size()));
  }
  bool is_embedding(const std::string& name) const override { return name.rfind("embed.", 0) == 0; }

  VocabParallelEmbedding embed{nullptr};
  std::vector<ToyBlock> blocks;
  ColumnParallelLinear head{nullptr};

 private:
  std::vector<LayerChunk> chunks_;
};

ModelFamilyRegistry registry_with_toy() {
  ModelFamilyRegistry registry;
  registry.add({"toy_mlp",
                {"ToyMlpForCausalLM"},
                [](const ModelConfig& config, ModelShardSpec shard) -> std::shared_ptr<CausalLM> {
                  return std::make_shared<ToyMlpLM>(config, std::move(shard));
                }});
  return registry;
}

TrainConfig toy_config(int dp, int tp, int zero_stage, int64_t micro_batches) {
  TrainConfig c = equivalence_config(dp, micro_batches);
  c.model.model_type = "toy_mlp";
  c.model.intermediate_size = 48;
  c.model.num_hidden_layers = 3;
  c.model.vocab_size = 259;  // odd: the vocabulary is padded under tp2
  c.parallel.tp = tp;
  c.data_parallel.zero_stage = zero_stage;
  return c;
}

void check_toy_layout(int dp, int tp, int zero_stage) {
  auto world = dst::testing::world();
  REQUIRE(world->size() == dp * tp);
  const ModelFamilyRegistry families = registry_with_toy();
  const int64_t m = 2;  // micro-batches per data-parallel rank per step
  const TrainConfig config = toy_config(dp, tp, zero_stage, m);
  Logger quiet(world->rank(), world->size(), LogLevel::kWarn);
  Trainer parallel(config, ProcessGroups::create(world, config.parallel), quiet, nullptr,
                   &families);
  REQUIRE(dynamic_cast<ToyMlpLM*>(&parallel.model()) != nullptr);
  const TrainConfig single_config = toy_config(1, 1, 0, dp * m);
  Trainer single(single_config,
                 ProcessGroups::create(comm::make_local_communicator(), single_config.parallel),
                 Logger(0, 1, LogLevel::kWarn), nullptr, &families);

  const int dp_rank = parallel.groups().coord().dp;
  const int64_t mbs = config.train.micro_batch_size;
  const int64_t rows = dp * m * mbs;
  double first_loss = 0, last_loss = 0;
  INFO("toy_mlp dp" << dp << " tp" << tp << " ZeRO-" << zero_stage);
  for (int64_t step = 0; step < config.train.steps; ++step) {
    const MicroBatch batch = global_batch(step % 2, rows, config.data.seq_len);
    const std::vector<MicroBatch> everything = rank_micro_batches(batch, dp * m, mbs, 1, 0);
    const std::vector<MicroBatch> mine = rank_micro_batches(batch, m, mbs, dp, dp_rank);
    const StepResult expected = single.train_step(everything);
    const StepResult actual = parallel.train_step(mine);
    INFO("step " << step);
    CHECK(actual.loss == Approx(expected.loss).epsilon(1e-5));
    CHECK(actual.grad_norm == Approx(expected.grad_norm).epsilon(1e-5));
    if (step == 0) first_loss = actual.loss;
    last_loss = actual.loss;
  }
  CHECK(last_loss < first_loss);  // it learns (two batches, seen alternately)
  const double worst = check_same_full_parameters(single, parallel, 1e-5);
  // The full parameters have the family's names and full (unpadded) shapes.
  for (const auto& [name, tensor] : parallel.full_parameters()) {
    if (name == "embed.weight" || name == "head.weight")
      CHECK(tensor.sizes() == torch::IntArrayRef({259, 32}));
    if (name == "blocks_0.up.weight") CHECK(tensor.sizes() == torch::IntArrayRef({48, 32}));
    if (name == "blocks_0.down.weight") CHECK(tensor.sizes() == torch::IntArrayRef({32, 48}));
  }
  if (world->rank() == 0)
    WARN("toy_mlp family dp" << dp << " tp" << tp << " ZeRO-" << zero_stage
                             << ": worst relative parameter difference vs single process "
                             << worst);
}

}  // namespace

TEST_CASE("A model family defined in a test trains under dp2 ZeRO-3 through the ordinary loop",
          "[family2]") {
  check_toy_layout(2, 1, 3);
}

TEST_CASE("A model family defined in a test trains under tp2 through the ordinary loop",
          "[family2]") {
  check_toy_layout(1, 2, 0);
}

TEST_CASE("The family registry names what it knows", "[family2]") {
  ModelFamilyRegistry registry = registry_with_toy();
  CHECK(registry.describe() ==
        "deepseek_v2 (DeepseekV2ForCausalLM), deepseek_v3 (DeepseekV3ForCausalLM), llama "
        "(LlamaForCausalLM), toy_mlp (ToyMlpForCausalLM)");
  CHECK_THROWS_WITH(registry.find("qwen2_moe"),
                    Catch::Contains("model family 'qwen2_moe' is not registered (known: "
                                    "deepseek_v2 (DeepseekV2ForCausalLM), deepseek_v3 "
                                    "(DeepseekV3ForCausalLM), llama (LlamaForCausalLM), toy_mlp "
                                    "(ToyMlpForCausalLM))"));
  CHECK_THROWS_WITH(registry.add({"toy_mlp", {}, registry.find("toy_mlp").build}),
                    Catch::Contains("model family 'toy_mlp' is already registered"));
  CHECK_THROWS_WITH(registry.add({"no_builder", {}, nullptr}),
                    Catch::Contains("model family 'no_builder' needs a model_type and a build"));
  // Without the registry that has it, the Trainer refuses the family by name.
  TrainConfig config = toy_config(1, 1, 0, 1);
  CHECK_THROWS_WITH(
      Trainer(config, ProcessGroups::create(comm::make_local_communicator(), config.parallel),
              Logger(0, 1, LogLevel::kWarn)),
      Catch::Contains("model family 'toy_mlp' is not registered"));
}

TEST_CASE("A family that records no tensor-parallel split is refused under tp", "[family2]") {
  auto world = dst::testing::world();
  ModelFamilyRegistry registry;
  registry.add({"forgetful",
                {},
                [](const ModelConfig& config, ModelShardSpec shard) -> std::shared_ptr<CausalLM> {
                  return std::make_shared<ToyMlpLM>(config, std::move(shard), false);
                }});
  TrainConfig config = toy_config(1, 2, 0, 1);
  config.model.model_type = "forgetful";
  CHECK_THROWS_WITH(
      Trainer(config, ProcessGroups::create(world, config.parallel),
              Logger(world->rank(), world->size(), LogLevel::kWarn), nullptr, &registry),
      Catch::Contains("model family 'forgetful' splits no parameter across "
                      "parallel.tp=2"));
}

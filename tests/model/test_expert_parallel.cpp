// Expert parallelism on 2 ranks: the all-to-all dispatcher (model/expert_dispatch.h) delivers
// every routed row to the rank holding its expert and brings it back unchanged; a DeepSeek-V3
// model with its routed experts split over the ranks gives each rank the logits and gradients of
// the model holding every expert (expert gradients summed over the ranks whose tokens they saw).
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "deepseek_train/model/deepseek.h"
#include "deepseek_train/model/expert_dispatch.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;

TEST_CASE("ep: dispatch delivers each row to its expert's rank, combine brings it back", "[ep2]") {
  auto world = dst::testing::world();
  REQUIRE(world->size() == 2);
  const int64_t experts = 6, hidden = 3;
  ExpertDispatcher dispatcher(world, experts);
  CHECK(dispatcher.local_experts() == 3);
  CHECK(dispatcher.first_local_expert() == 3 * world->rank());
  // Rows sorted by expert; row = [expert, source rank, index]. Expert 4 gets nothing from rank 1.
  torch::manual_seed(17 + world->rank());
  torch::Tensor chosen = std::get<0>(torch::randint(0, experts, {23}, torch::kInt64).sort());
  if (world->rank() == 1) chosen = chosen.masked_fill(chosen == 4, 5);
  const torch::Tensor counts = torch::bincount(chosen, {}, experts);
  torch::Tensor rows = torch::stack({chosen.to(torch::kFloat32),
                                     torch::full({23}, static_cast<float>(world->rank())),
                                     torch::arange(23, torch::kFloat32)},
                                    1)
                           .requires_grad_(true);
  const DispatchedTokens arrived = dispatcher.dispatch(rows, counts);
  REQUIRE(arrived.rows.size(1) == hidden);
  // Grouped by local expert, each group exactly that expert's rows.
  int64_t start = 0;
  for (int64_t j = 0; j < dispatcher.local_experts(); ++j) {
    const torch::Tensor group = arrived.rows.narrow(0, start, arrived.rows_per_local_expert[j]);
    CHECK((group.select(1, 0) == dispatcher.first_local_expert() + j).all().item<bool>());
    start += arrived.rows_per_local_expert[j];
  }
  CHECK(start == arrived.rows.size(0));
  // Every expert's rows from both ranks arrived: the group sizes sum the ranks' counts.
  const torch::Tensor all_counts = all_reduce_sum(counts.to(torch::kFloat64), *world);
  for (int64_t j = 0; j < dispatcher.local_experts(); ++j)
    CHECK(arrived.rows_per_local_expert[j] ==
          all_counts[dispatcher.first_local_expert() + j].item<double>());
  // Identity experts: combine gives back the rows, and the gradient flows back to them.
  const torch::Tensor back = dispatcher.combine(arrived.rows, arrived);
  CHECK(back.equal(rows));
  const torch::Tensor weight = torch::randn({23, hidden});
  (back * weight).sum().backward();
  CHECK(rows.grad().equal(weight));
}

TEST_CASE("ep: a DeepSeek-V3 model with experts split over 2 ranks equals the whole model",
          "[ep2]") {
  auto world = dst::testing::world();
  REQUIRE(world->size() == 2);
  const ModelConfig config = dst::testing::deepseek_equivalence_config(1, 1).model;
  ModelShardSpec shard;
  shard.ep_group = world;
  DeepseekModel split(config, shard), whole(config);
  split->initialize(21);
  whole->initialize(21);
  const auto split_params = split->named_parameters();
  CHECK(split_params.contains("model.layers.1.mlp.experts." + std::to_string(4 * world->rank()) +
                              ".up_proj.weight"));
  CHECK_FALSE(split_params.contains("model.layers.1.mlp.experts." +
                                    std::to_string(4 * (1 - world->rank())) + ".up_proj.weight"));
  // Each rank its own batch.
  torch::manual_seed(100 + world->rank());
  const torch::Tensor ids = torch::randint(0, config.vocab_size, {3, 10}, torch::kInt64);
  const torch::Tensor weight = torch::randn({3, 10, config.vocab_size});
  const torch::Tensor split_logits = split->forward(ids);
  const torch::Tensor whole_logits = whole->forward(ids);
  CHECK(torch::allclose(split_logits, whole_logits, 1e-5, 1e-5));
  (split_logits * weight).sum().backward();
  (whole_logits * weight).sum().backward();
  // An expert saw both ranks' tokens: its gradient is the sum of the whole models' gradients
  // (summed in the whole model's parameter order, the same on every rank).
  std::map<std::string, torch::Tensor> expected;
  for (const auto& item : whole->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    const bool expert = item.key().find(".experts.") != std::string::npos;
    expected[item.key()] =
        expert ? all_reduce_sum(item.value().grad(), *world) : item.value().grad();
  }
  for (const auto& item : split_params) {
    INFO(item.key());
    if (item.value().requires_grad())
      CHECK(torch::allclose(item.value().grad(), expected.at(item.key()), 1e-5, 1e-6));
  }
}

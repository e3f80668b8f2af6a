// Tensor-parallel building blocks against their single-process versions, on every rank of the
// world as one tp group: the conjugate communication ops, column/row-parallel projections (the
// model's attention and MLP), the vocab-parallel embedding and cross-entropy with a padded
// vocabulary — forward values and gradients.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "deepseek_train/model/llama.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"
#include "deepseek_train/tensor_parallel/vocab_parallel.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

ModelConfig small_model(int64_t vocab) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 32;
  return c;
}

}  // namespace

TEST_CASE("tp: conjugate ops: forward values and gradients", "[tp]") {
  auto group = world();
  const int p = group->size(), r = group->rank();
  auto generator = at::detail::createCPUGenerator(3);
  torch::Tensor full = torch::randn({3, 4 * p}, generator);
  torch::Tensor local = full.narrow(1, r * 4, 4).clone().requires_grad_(true);

  // gather forward = the full tensor; its backward hands each rank its slice of the gradient.
  torch::Tensor gathered = gather_from_tp_region(local, *group);
  CHECK(torch::allclose(gathered, full));
  torch::Tensor weights = torch::arange(full.numel(), torch::kFloat32).view(full.sizes());
  (gathered * weights).sum().backward();
  CHECK(torch::equal(local.grad(), weights.narrow(1, r * 4, 4)));

  // scatter forward = this rank's slice; backward gathers.
  torch::Tensor x = full.clone().requires_grad_(true);
  torch::Tensor mine = scatter_to_tp_region(x, *group);
  CHECK(torch::equal(mine, full.narrow(1, r * 4, 4)));
  (mine * weights.narrow(1, r * 4, 4)).sum().backward();
  CHECK(torch::allclose(x.grad(), weights));

  // copy: identity forward, all-reduce backward; reduce: all-reduce forward, identity backward.
  torch::Tensor y = full.clone().requires_grad_(true);
  torch::Tensor copied = copy_to_tp_region(y, *group);
  CHECK(torch::equal(copied, full));
  (copied * (r + 1)).sum().backward();
  CHECK(torch::allclose(y.grad(), torch::full_like(full, p * (p + 1) / 2.0)));
  torch::Tensor z = (full * (r + 1)).requires_grad_(true);
  torch::Tensor reduced = reduce_from_tp_region(z, *group);
  CHECK(torch::allclose(reduced, full * (p * (p + 1) / 2.0)));
  reduced.sum().backward();
  CHECK(torch::equal(z.grad(), torch::ones_like(full)));
}

TEST_CASE("tp: vocab-parallel cross-entropy with padding equals the full cross-entropy", "[tp]") {
  auto group = world();
  const int p = group->size(), r = group->rank();
  const int64_t vocab = 4 * p + 1;  // never divisible: the last shard carries padding
  const VocabShard shard = vocab_shard(vocab, p, r);
  CHECK(shard.padded_vocab % p == 0);
  CHECK(shard.padded_vocab >= vocab);
  auto generator = at::detail::createCPUGenerator(5);
  torch::Tensor logits = torch::randn({2, 6, vocab}, generator) * 3;
  torch::Tensor labels = torch::randint(0, vocab, {2, 6}, generator, torch::kInt64);
  labels[0][1] = kIgnoreIndex;
  labels[1][5] = vocab - 1;  // the last real id, next to the padding

  torch::Tensor reference_input = logits.clone().requires_grad_(true);
  torch::Tensor reference = cross_entropy_sum(reference_input, labels);
  reference.backward();

  // This rank's columns of the padded logits; padding columns hold garbage that must not count.
  torch::Tensor padded = torch::full({2, 6, shard.padded_vocab}, 50.0);
  padded.narrow(2, 0, vocab).copy_(logits);
  torch::Tensor local = padded.narrow(2, shard.begin, shard.size()).clone().requires_grad_(true);
  torch::Tensor loss = vocab_parallel_cross_entropy_sum(local, labels, shard, *group, kIgnoreIndex);
  CHECK(loss.item<double>() == Approx(reference.item<double>()).epsilon(1e-6));
  loss.backward();
  const int64_t real = std::max<int64_t>(0, std::min(shard.end, vocab) - shard.begin);
  CHECK(torch::allclose(local.grad().narrow(2, 0, real),
                        reference_input.grad().narrow(2, shard.begin, real), 1e-5, 1e-7));
  if (real < shard.size())
    CHECK(local.grad().narrow(2, real, shard.size() - real).abs().max().item<double>() == 0.0);
}

TEST_CASE("tp: the sharded model equals the full model (logits and gathered gradients)", "[tp]") {
  auto group = world();
  const int p = group->size();
  if (4 % p != 0) return;                                // the small model has 4 heads
  const ModelConfig config = small_model(/*vocab=*/37);  // padded under tp
  LlamaModel full(config);
  full->initialize(7);
  ModelShardSpec shard;
  shard.tp_group = group;
  LlamaModel sharded(config, shard);
  sharded->initialize(7);
  // Same initial weights in every layout.
  for (const auto& item : sharded->named_parameters()) {
    INFO(item.key());
    CHECK(torch::equal(sharded->gather_tp_parameter(item.key(), item.value()),
                       full->named_parameters()[item.key()]));
  }
  auto generator = at::detail::createCPUGenerator(11);
  torch::Tensor ids = torch::randint(0, 37, {2, 9}, generator, torch::kInt64);
  torch::Tensor labels = torch::randint(0, 37, {2, 9}, generator, torch::kInt64);

  torch::Tensor expected_logits = full->forward(ids);
  CHECK(relative_difference(sharded->forward(ids), expected_logits) < 1e-6);

  torch::Tensor expected_loss = full->loss_sum(full->forward_chunk(0, ids), labels);
  torch::Tensor loss = sharded->loss_sum(sharded->forward_chunk(0, ids), labels);
  CHECK(loss.item<double>() == Approx(expected_loss.item<double>()).epsilon(1e-6));
  expected_loss.backward();
  loss.backward();
  for (const auto& item : sharded->named_parameters()) {
    INFO(item.key());
    const torch::Tensor grad = sharded->gather_tp_parameter(item.key(), item.value().grad());
    CHECK(relative_difference(grad, full->named_parameters()[item.key()].grad()) < 1e-5);
  }
}

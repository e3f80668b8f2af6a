// Activation checkpointing: the same loss and gradients as without, and less memory held between
// forward and backward — measured as the heap bytes in use (glibc mallinfo2) after the forward,
// against the memory plan's estimate of the saving.
#include <malloc.h>
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "deepseek_train/model/llama.h"
#include "deepseek_train/sharding/memory_plan.h"

using namespace dst;

namespace {

ModelConfig config() {
  ModelConfig c;
  c.vocab_size = 259;
  c.hidden_size = 64;
  c.intermediate_size = 176;
  c.num_hidden_layers = 6;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 128;
  return c;
}

int64_t heap_in_use() {
  const struct mallinfo2 info = mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
}

struct Measured {
  double loss = 0;
  std::vector<torch::Tensor> grads;
  int64_t held_bytes = 0;  // heap growth between before the forward and after it
};

Measured run(int checkpoint_every, const torch::Tensor& ids, const torch::Tensor& labels) {
  ModelShardSpec shard;
  shard.checkpoint_every = checkpoint_every;
  LlamaModel model(config(), shard);
  model->initialize(3);
  Measured m;
  const int64_t before = heap_in_use();
  torch::Tensor loss = model->loss_sum(model->forward_chunk(0, ids), labels);
  m.held_bytes = heap_in_use() - before;
  loss.backward();
  m.loss = loss.item<double>();
  for (const auto& p : model->parameters()) m.grads.push_back(p.grad().clone());
  return m;
}

}  // namespace

TEST_CASE("activation checkpointing: same gradients, less memory held for backward", "[model]") {
  auto generator = at::detail::createCPUGenerator(9);
  const int64_t rows = 8, seq = 128;
  torch::Tensor ids = torch::randint(0, 259, {rows, seq}, generator, torch::kInt64);
  torch::Tensor labels = torch::randint(0, 259, {rows, seq}, generator, torch::kInt64);
  const Measured plain = run(0, ids, labels);
  const Measured checkpointed = run(1, ids, labels);
  CHECK(checkpointed.loss == plain.loss);
  REQUIRE(checkpointed.grads.size() == plain.grads.size());
  for (size_t i = 0; i < plain.grads.size(); ++i)
    CHECK(torch::allclose(checkpointed.grads[i], plain.grads[i], 1e-5, 1e-7));

  const int64_t layers = config().num_hidden_layers;
  const int64_t planned_plain =
      estimate_activation_bytes(config(), rows, seq, Precision::kFloat32, 1, layers, true, 0, true);
  const int64_t planned_checkpointed = estimate_activation_bytes(
      config(), rows, seq, Precision::kFloat32, 1, layers, true, layers, true);
  const int64_t measured_saving = plain.held_bytes - checkpointed.held_bytes;
  const int64_t planned_saving = planned_plain - planned_checkpointed;
  WARN("held after forward: " << format_bytes(plain.held_bytes) << " without, "
                              << format_bytes(checkpointed.held_bytes)
                              << " with checkpointing (plan: " << format_bytes(planned_plain)
                              << " / " << format_bytes(planned_checkpointed) << ")");
  CHECK(checkpointed.held_bytes < plain.held_bytes / 2);
  // The plan's saving is the right size: within a factor of two of the measured one.
  CHECK(measured_saving > planned_saving / 2);
  CHECK(measured_saving < planned_saving * 2);
}

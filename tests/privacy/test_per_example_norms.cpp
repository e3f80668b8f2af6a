// Per-example gradient norms from activations and output gradients against brute force (one
// backward per example, fp64, within 1e-9 relative): linear weights by both routes (Gram matrices
// for short sequences, the materialised gradient for long ones), biases, embeddings with
// repeated tokens, RMSNorm-style scales, and a LoRA pair (A then B) through its intermediate.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "deepseek_train/core/error.h"
#include "deepseek_train/privacy/per_example_norms.h"

using namespace dst;

namespace {

constexpr auto kF64 = torch::kFloat64;

// ||grad of `parameter`||² for each example's loss (y_i * r_i).sum(), one backward each.
template <typename Forward>
torch::Tensor brute_force(Forward forward, torch::Tensor parameter, const torch::Tensor& input,
                          const torch::Tensor& projection) {
  std::vector<torch::Tensor> norms;
  for (int64_t i = 0; i < input.size(0); ++i) {
    parameter.mutable_grad() = torch::Tensor();
    (forward(input.narrow(0, i, 1)) * projection.narrow(0, i, 1)).sum().backward();
    norms.push_back(parameter.grad().pow(2).sum());
  }
  return torch::stack(norms);
}

void check_close(const torch::Tensor& ghost, const torch::Tensor& brute) {
  REQUIRE(ghost.sizes() == brute.sizes());
  for (int64_t i = 0; i < ghost.size(0); ++i)
    CHECK(ghost[i].item<double>() == Approx(brute[i].item<double>()).epsilon(1e-9));
}

}  // namespace

TEST_CASE("per-example norms: linear weights and biases equal one backward per example",
          "[privacy]") {
  torch::manual_seed(11);
  for (int64_t positions : {1, 3, 40}) {  // 40² > 6·5: the materialised route
    INFO("positions " << positions);
    torch::nn::Linear linear(torch::nn::LinearOptions(6, 5).bias(true));
    linear->to(kF64);
    const torch::Tensor x = torch::randn({4, positions, 6}, kF64);
    const torch::Tensor r = torch::randn({4, positions, 5}, kF64);
    const auto forward = [&](const torch::Tensor& in) { return linear(in); };
    // The output gradient of example i's loss is r_i.
    check_close(linear_weight_per_example_sq_norms(x, r),
                brute_force(forward, linear->weight, x, r));
    check_close(bias_per_example_sq_norms(r), brute_force(forward, linear->bias, x, r));
  }
  // 2-D inputs are one position each.
  const torch::Tensor x2 = torch::randn({3, 6}, kF64), r2 = torch::randn({3, 5}, kF64);
  check_close(linear_weight_per_example_sq_norms(x2, r2),
              linear_weight_per_example_sq_norms(x2.unsqueeze(1), r2.unsqueeze(1)));
}

TEST_CASE("per-example norms: embeddings (repeated tokens) and elementwise scales", "[privacy]") {
  torch::manual_seed(12);
  torch::nn::Embedding embedding(10, 4);
  embedding->to(kF64);
  const torch::Tensor ids = torch::tensor({{1, 2, 1, 1, 7}, {3, 3, 3, 3, 3}, {0, 9, 8, 7, 6}});
  const torch::Tensor r = torch::randn({3, 5, 4}, kF64);
  check_close(embedding_per_example_sq_norms(ids, r),
              brute_force([&](const torch::Tensor& in) { return embedding(in); }, embedding->weight,
                          ids, r));

  torch::Tensor scale = torch::randn({4}, kF64).requires_grad_(true);
  const torch::Tensor normalized = torch::randn({3, 5, 4}, kF64);
  check_close(
      scale_per_example_sq_norms(normalized, r),
      brute_force([&](const torch::Tensor& in) { return in * scale; }, scale, normalized, r));
}

TEST_CASE("per-example norms: a LoRA pair through its intermediate activations", "[privacy]") {
  torch::manual_seed(13);
  torch::Tensor a = torch::randn({2, 6}, kF64).requires_grad_(true);  // rank 2
  torch::Tensor b = torch::randn({5, 2}, kF64).requires_grad_(true);
  const torch::Tensor x = torch::randn({3, 7, 6}, kF64);
  const torch::Tensor r = torch::randn({3, 7, 5}, kF64);
  const auto lora = [&](const torch::Tensor& in) {
    return torch::matmul(torch::matmul(in, a.t()), b.t());
  };
  // B's input is A's output, its output gradient r; A's input is x, its output gradient r B.
  const torch::Tensor intermediate = torch::matmul(x, a.t()).detach();
  const torch::Tensor a_output_grad = torch::matmul(r, b.detach());
  check_close(linear_weight_per_example_sq_norms(intermediate, r), brute_force(lora, b, x, r));
  check_close(linear_weight_per_example_sq_norms(x, a_output_grad), brute_force(lora, a, x, r));
}

TEST_CASE("per-example norms: mismatched shapes are one-line errors", "[privacy]") {
  CHECK_THROWS_WITH(
      linear_weight_per_example_sq_norms(torch::zeros({2, 3, 4}), torch::zeros({2, 4, 5})),
      Catch::StartsWith("per-example norms: inputs [2, 3, 4] and output gradients "
                        "[2, 4, 5] differ in examples or positions"));
  CHECK_THROWS_WITH(bias_per_example_sq_norms(torch::zeros({2})),
                    Catch::StartsWith("per-example norms: output gradients must be"));
}

// The fused CPU kernels against the ATen reference ops they replace: forward values and every
// gradient, on shapes that exercise the block tails (sequences not a multiple of the 64-row
// attention block, grouped-query attention) and on a whole model.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "deepseek_train/kernels/cpu_gemm.h"
#include "deepseek_train/kernels/fused_ops.h"
#include "deepseek_train/model/llama.h"

using namespace dst;
namespace F = torch::nn::functional;

namespace {

double relative(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).norm() /
          b.to(torch::kFloat64).norm().clamp_min(1e-30))
      .item<double>();
}

torch::Tensor randn(std::vector<int64_t> shape, uint64_t seed, double scale = 1.0) {
  auto generator = at::detail::createCPUGenerator(seed);
  return (torch::randn(shape, generator) * scale).requires_grad_(true);
}

// Gradients of sum(out * weights) with respect to `inputs`, a fixed random projection so every
// output element matters.
std::vector<torch::Tensor> grads_of(const torch::Tensor& out, std::vector<torch::Tensor> inputs,
                                    uint64_t seed) {
  auto generator = at::detail::createCPUGenerator(seed);
  torch::Tensor weights = torch::randn(out.sizes(), generator);
  return torch::autograd::grad({(out * weights).sum()}, inputs);
}

torch::Tensor reference_attention(const torch::Tensor& q, const torch::Tensor& k,
                                  const torch::Tensor& v, int64_t heads, int64_t kv_heads,
                                  double theta) {
  const int64_t batch = q.size(0), seq = q.size(1), head_dim = q.size(2) / heads;
  auto split = [&](const torch::Tensor& t, int64_t n) {
    return t.reshape({batch, seq, n, head_dim}).transpose(1, 2);
  };
  auto qh = apply_rotary(split(q, heads), theta);
  auto kh = apply_rotary(split(k, kv_heads), theta);
  auto vh = split(v, kv_heads);
  if (kv_heads != heads) {
    kh = kh.repeat_interleave(heads / kv_heads, 1);
    vh = vh.repeat_interleave(heads / kv_heads, 1);
  }
  auto scores = torch::matmul(qh, kh.transpose(-2, -1)) / std::sqrt(double(head_dim));
  auto future = torch::ones({seq, seq}, torch::kBool).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1), vh)
      .transpose(1, 2)
      .reshape({batch, seq, heads * head_dim});
}

}  // namespace

TEST_CASE("sgemm: all transpose combinations, leading dimensions and beta", "[kernels]") {
  const int64_t m = 37, n = 19, k = 70;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      auto a_store = torch::randn({ta ? k : m, (ta ? m : k) + 3});  // padded rows: lda > cols
      auto b_store = torch::randn({tb ? n : k, (tb ? k : n) + 5});
      auto a = a_store.narrow(1, 0, ta ? m : k), b = b_store.narrow(1, 0, tb ? k : n);
      auto c_store = torch::randn({m, n + 2});
      auto expected =
          0.5 * c_store.narrow(1, 0, n) + 2.0 * torch::mm(ta ? a.t() : a, tb ? b.t() : b);
      kernels::sgemm(ta, tb, m, n, k, 2.0f, a_store.data_ptr<float>(), a_store.size(1),
                     b_store.data_ptr<float>(), b_store.size(1), 0.5f, c_store.data_ptr<float>(),
                     c_store.size(1));
      CHECK(relative(c_store.narrow(1, 0, n), expected) < 1e-6);
    }
  }
  // beta 0 ignores whatever C held (the fused ops pass at::empty buffers), NaN included.
  auto a = torch::randn({4, 3}), b = torch::randn({3, 5});
  auto c = torch::full({4, 5}, std::numeric_limits<float>::quiet_NaN());
  kernels::sgemm(false, false, 4, 5, 3, 1.0f, a.data_ptr<float>(), 3, b.data_ptr<float>(), 5, 0.0f,
                 c.data_ptr<float>(), 5);
  CHECK(relative(c, torch::mm(a, b)) < 1e-6);
  // k = 0: C = beta * C; m = 0: nothing is touched.
  c.fill_(std::numeric_limits<float>::quiet_NaN());
  kernels::sgemm(false, false, 4, 5, 0, 1.0f, a.data_ptr<float>(), 1, b.data_ptr<float>(), 5, 0.0f,
                 c.data_ptr<float>(), 5);
  CHECK(c.abs().sum().item<float>() == 0.0f);
  c.fill_(2.0f);
  kernels::sgemm(false, false, 4, 5, 0, 1.0f, a.data_ptr<float>(), 1, b.data_ptr<float>(), 5, 0.5f,
                 c.data_ptr<float>(), 5);
  CHECK(c.sum().item<float>() == 20.0f);
  kernels::sgemm(false, false, 0, 5, 3, 1.0f, nullptr, 3, b.data_ptr<float>(), 5, 0.0f, nullptr, 5);
  CHECK((std::string(kernels::sgemm_backend()) == "onednn" ||
         std::string(kernels::sgemm_backend()) == "libtorch"));
}

TEST_CASE("fused_linear equals F::linear, forward and both gradients", "[kernels]") {
  auto x = randn({3, 5, 24}, 1), w = randn({17, 24}, 2);
  auto fused = fused_linear(x, w);
  auto reference = F::linear(x, w);
  CHECK(relative(fused, reference) < 1e-6);
  auto gf = grads_of(fused, {x, w}, 3), gr = grads_of(reference, {x, w}, 3);
  CHECK(relative(gf[0], gr[0]) < 1e-6);
  CHECK(relative(gf[1], gr[1]) < 1e-6);
  // A frozen weight (LoRA's base projection) gets no gradient and costs no GEMM.
  auto frozen = w.detach();
  auto out = fused_linear(x, frozen);
  CHECK(out.requires_grad());
  CHECK(relative(grads_of(out, {x}, 3)[0], gr[0]) < 1e-6);
  // A transposed (non-contiguous) input, an input without rows and one without features.
  auto xt = randn({24, 6}, 30).t();
  CHECK(relative(fused_linear(xt, w), F::linear(xt, w)) < 1e-6);
  CHECK(relative(grads_of(fused_linear(xt, w), {w}, 31)[0],
                 grads_of(F::linear(xt, w), {w}, 31)[0]) < 1e-6);
  CHECK(fused_linear(torch::zeros({0, 24}), w).sizes() == torch::IntArrayRef({0, 17}));
  auto no_features = fused_linear(torch::zeros({3, 0}), torch::zeros({4, 0}));
  CHECK(no_features.sizes() == torch::IntArrayRef({3, 4}));
  CHECK(no_features.abs().sum().item<float>() == 0.0f);
}

TEST_CASE("fused_linear on bf16 computes in fp32: results and gradients rounded once",
          "[kernels]") {
  auto x = randn({4, 9, 40}, 11).to(torch::kBFloat16), w = randn({33, 40}, 12).to(torch::kBFloat16);
  auto fused = fused_linear(x, w);
  CHECK(fused.scalar_type() == torch::kBFloat16);
  // The fp32 product of the same (bf16) values, rounded once: equal up to that rounding.
  auto exact = F::linear(x.to(torch::kFloat32), w.to(torch::kFloat32));
  CHECK(relative(fused.to(torch::kFloat32), exact) < 1.0 / 256);
  auto xf = x.to(torch::kFloat32), wf = w.to(torch::kFloat32);
  auto gf = grads_of(fused, {x, w}, 13);
  auto gr = grads_of(F::linear(xf, wf), {xf, wf}, 13);
  CHECK(gf[0].scalar_type() == torch::kBFloat16);
  CHECK(gf[1].scalar_type() == torch::kBFloat16);
  CHECK(relative(gf[0].to(torch::kFloat32), gr[0]) < 1.0 / 256);
  CHECK(relative(gf[1].to(torch::kFloat32), gr[1]) < 1.0 / 256);
  // Where the CPU multiplies bf16 natively, oneDNN's bf16 GEMM is used instead.
  CHECK(fused_linear_applies(x, w) == !cpu_has_bf16_matmul());
  CHECK(fused_linear_applies(xf, wf));
  CHECK_FALSE(fused_linear_applies(x, wf));
}

TEST_CASE("fused_rms_norm equals the reference RMSNorm", "[kernels]") {
  RMSNorm reference(48, 1e-5);
  reference->fused = false;
  torch::NoGradGuard no_grad;
  reference->weight.uniform_(0.5, 1.5);
  torch::AutoGradMode enable(true);
  const int threads_before = torch::get_num_threads();
  for (int threads : {1, 2}) {
    torch::set_num_threads(threads);
    auto x = randn({7, 33, 48}, 4, 3.0);  // 231 rows: not a multiple of the row grain
    auto fused = fused_rms_norm(x, reference->weight, 1e-5);
    auto expected = reference(x);
    CHECK(relative(fused, expected) < 1e-6);
    auto gf = grads_of(fused, {x, reference->weight}, 5);
    auto gr = grads_of(expected, {x, reference->weight}, 5);
    CHECK(relative(gf[0], gr[0]) < 1e-5);
    CHECK(relative(gf[1], gr[1]) < 1e-5);
  }
  torch::set_num_threads(threads_before);
  // A frozen weight: only the input gets a gradient.
  auto x = randn({5, 48}, 40);
  auto frozen = reference->weight.detach();
  CHECK(relative(grads_of(fused_rms_norm(x, frozen, 1e-5), {x}, 41)[0],
                 grads_of(reference(x), {x}, 41)[0]) < 1e-5);
}

TEST_CASE("fused_swiglu equals silu(gate) * up, including large and non-finite inputs",
          "[kernels]") {
  auto gate = randn({5, 3001}, 6, 4.0), up = randn({5, 3001}, 7);
  auto fused = fused_swiglu(gate, up);
  auto expected = F::silu(gate) * up;
  CHECK(relative(fused, expected) < 1e-6);
  auto gf = grads_of(fused, {gate, up}, 8), gr = grads_of(expected, {gate, up}, 8);
  CHECK(relative(gf[0], gr[0]) < 1e-6);
  CHECK(relative(gf[1], gr[1]) < 1e-6);
  auto frozen_up = up.detach();
  CHECK(relative(grads_of(fused_swiglu(gate, frozen_up), {gate}, 9)[0],
                 grads_of(F::silu(gate) * frozen_up, {gate}, 9)[0]) < 1e-6);
  torch::NoGradGuard no_grad;
  // Element by element: silu of -88 is -88 * 6e-39 (a denormal), of -30 about -2.8e-12.
  auto extremes = torch::tensor({-200.0f, -88.0f, -30.0f, -5.0f, 0.0f, 5.0f, 30.0f, 88.0f, 200.0f});
  CHECK(torch::allclose(fused_swiglu(extremes, torch::ones({9})), F::silu(extremes), 1e-6, 1e-40));
  auto nan = fused_swiglu(torch::tensor({std::nanf(""), 1.0f}), torch::ones({2}));
  CHECK(std::isnan(nan[0].item<float>()));
  CHECK(std::isfinite(nan[1].item<float>()));
}

TEST_CASE("fused_causal_attention equals rotary + masked softmax attention", "[kernels]") {
  struct Case {
    int64_t batch, seq, heads, kv_heads, head_dim;
  };
  // seq 150: blocks of 64, 64 and 22; seq 9: one partial block; kv 2 of 4: grouped-query;
  // head_dim 6: rotary halves of 3, shorter than any vector.
  const int threads_before = torch::get_num_threads();
  for (int threads : {1, 2}) {
    torch::set_num_threads(threads);
    for (const Case c : {Case{2, 150, 3, 3, 16}, Case{1, 9, 4, 2, 8}, Case{2, 128, 4, 1, 32},
                         Case{1, 70, 2, 2, 6}}) {
      // q as a slice of a wider projection: not contiguous.
      auto wide = randn({c.batch, c.seq, c.heads * c.head_dim + 5}, 10);
      auto q = wide.narrow(2, 0, c.heads * c.head_dim);
      auto k = randn({c.batch, c.seq, c.kv_heads * c.head_dim}, 11);
      auto v = randn({c.batch, c.seq, c.kv_heads * c.head_dim}, 12);
      auto expected = reference_attention(q, k, v, c.heads, c.kv_heads, 10000.0);
      auto gr = grads_of(expected, {wide, k, v}, 13);
      // Probabilities kept (the default budget) and recomputed from the log-sum-exp (budget 0).
      for (int64_t budget : {kDefaultMaxKeptProbabilityBytes, int64_t{0}}) {
        auto fused = fused_causal_attention(q, k, v, c.heads, c.kv_heads, 10000.0, budget);
        INFO("seq " << c.seq << " heads " << c.heads << " kv " << c.kv_heads << " budget "
                    << budget);
        CHECK(relative(fused, expected) < 1e-5);
        auto gf = grads_of(fused, {wide, k, v}, 13);
        CHECK(relative(gf[0], gr[0]) < 1e-5);
        CHECK(relative(gf[1], gr[1]) < 1e-5);
        CHECK(relative(gf[2], gr[2]) < 1e-5);
      }
    }
  }
  torch::set_num_threads(threads_before);
}

TEST_CASE("fused_cross_entropy_sum equals F::cross_entropy with ignored rows", "[kernels]") {
  auto logits = randn({40, 301}, 14, 5.0);
  auto labels = torch::randint(0, 301, {40}, at::detail::createCPUGenerator(15));
  labels.narrow(0, 3, 4).fill_(kIgnoreIndex);
  auto fused = fused_cross_entropy_sum(logits, labels, kIgnoreIndex);
  auto expected = F::cross_entropy(
      logits, labels,
      F::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex).reduction(torch::kSum));
  CHECK(fused.dim() == 0);
  CHECK(relative(fused, expected) < 1e-6);
  auto gf = torch::autograd::grad({fused * 0.5}, {logits})[0];
  auto gr = torch::autograd::grad({expected * 0.5}, {logits})[0];
  CHECK(relative(gf, gr) < 1e-6);
  CHECK(gf.narrow(0, 3, 4).abs().sum().item<float>() == 0.0f);
  // Extreme logits stay finite and exact: one very large logit dominates.
  torch::NoGradGuard no_grad;
  auto peaked = torch::zeros({1, 5});
  peaked[0][2] = 1000.0f;
  CHECK(fused_cross_entropy_sum(peaked, torch::tensor({int64_t{2}}), kIgnoreIndex).item<float>() ==
        Approx(0.0).margin(1e-6));
  CHECK(fused_cross_entropy_sum(peaked, torch::tensor({int64_t{0}}), kIgnoreIndex).item<float>() ==
        Approx(1000.0));
  CHECK_THROWS(fused_cross_entropy_sum(peaked, torch::tensor({int64_t{7}}), kIgnoreIndex));
  // A -inf logit (a masked class) contributes exactly nothing, to the loss or the gradient.
  torch::AutoGradMode enable(true);
  auto masked =
      torch::tensor({{0.5f, -std::numeric_limits<float>::infinity(), 1.5f}}).requires_grad_(true);
  auto masked_loss = fused_cross_entropy_sum(masked, torch::tensor({int64_t{0}}), kIgnoreIndex);
  CHECK(masked_loss.item<float>() == Approx(std::log(1.0 + std::exp(1.0))));
  auto masked_grad = torch::autograd::grad({masked_loss}, {masked})[0];
  CHECK(masked_grad[0][1].item<float>() == 0.0f);
}

namespace {

// A 2-layer grouped-query model built twice from the same seed, with the fused kernels and with
// the ATen reference ops, in `dtype`: the summed loss and every parameter's gradient must agree.
void check_fused_model_matches_reference(torch::ScalarType dtype, uint64_t seed,
                                         double loss_tolerance, double gradient_tolerance) {
  ModelConfig config;
  config.vocab_size = 97;
  config.hidden_size = 64;
  config.intermediate_size = 96;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  ModelShardSpec reference_spec;
  reference_spec.fused_kernels = false;
  LlamaModel fused(config), reference(config, reference_spec);
  for (LlamaModel* model : {&fused, &reference}) {
    (*model)->initialize(seed);
    (*model)->to(dtype);
  }
  auto ids = torch::randint(0, 97, {2, 70}, at::detail::createCPUGenerator(seed + 1));
  auto labels = torch::randint(0, 97, {2, 70}, at::detail::createCPUGenerator(seed + 2));
  auto loss_fused = fused->loss_sum(fused->forward(ids), labels);
  auto loss_reference = reference->loss_sum(reference->forward(ids), labels);
  CHECK(loss_fused.scalar_type() == torch::kFloat32);
  CHECK(relative(loss_fused, loss_reference) < loss_tolerance);
  loss_fused.backward();
  loss_reference.backward();
  auto fused_params = fused->named_parameters();
  for (const auto& item : reference->named_parameters()) {
    INFO(item.key());
    CHECK(fused_params[item.key()].grad().scalar_type() == dtype);
    CHECK(relative(fused_params[item.key()].grad(), item.value().grad()) < gradient_tolerance);
  }
}

}  // namespace

TEST_CASE("a model with fused kernels equals the reference model: loss and every gradient",
          "[kernels]") {
  check_fused_model_matches_reference(torch::kFloat32, 21, 1e-6, 1e-5);
}

TEST_CASE("a bf16 model with fused kernels (widened to fp32 inside) matches the bf16 reference",
          "[kernels]") {
  // bf16 keeps 8 bits of mantissa: the two differ by where they round, not by what they compute
  // (measured: loss 1e-5, gradients up to 0.8% apart).
  check_fused_model_matches_reference(torch::kBFloat16, 31, 1e-3, 2e-2);
}

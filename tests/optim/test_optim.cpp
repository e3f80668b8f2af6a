#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>

#include "deepseek_train/core/error.h"
#include "deepseek_train/optim/adamw.h"
#include "deepseek_train/optim/grad_clip.h"
#include "deepseek_train/optim/lr_schedule.h"

using namespace dst;

TEST_CASE("AdamW matches a scalar re-derivation of the update", "[optim]") {
  AdamWOptions o;
  o.lr = 0.01;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  auto decayed = torch::tensor({0.5, -1.0, 2.0}, torch::kFloat64).requires_grad_(true);
  auto exempt = torch::tensor({1.0, 3.0}, torch::kFloat64).requires_grad_(true);
  AdamW adamw({{"w", decayed, true}, {"norm.weight", exempt, false}}, o);

  std::vector<double> w = {0.5, -1.0, 2.0}, n = {1.0, 3.0};
  std::vector<double> mw(3, 0), vw(3, 0), mn(2, 0), vn(2, 0);
  const std::vector<std::vector<double>> grads_w = {
      {0.1, -0.2, 0.3}, {0.0, 0.5, -0.1}, {1.0, 1.0, 1.0}};
  const std::vector<std::vector<double>> grads_n = {{0.2, 0.0}, {-0.3, 0.7}, {0.05, -0.05}};
  const std::vector<double> lrs = {0.01, 0.005, 0.02};
  auto reference = [&](std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                       const std::vector<double>& g, int t, double lr, bool decay) {
    for (size_t i = 0; i < p.size(); ++i) {
      if (decay) p[i] -= lr * o.weight_decay * p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(o.beta1, t));
      const double vhat = v[i] / (1 - std::pow(o.beta2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + o.eps);
    }
  };
  for (int t = 1; t <= 3; ++t) {
    decayed.mutable_grad() = torch::tensor(grads_w[t - 1], torch::kFloat64);
    exempt.mutable_grad() = torch::tensor(grads_n[t - 1], torch::kFloat64);
    adamw.step(lrs[t - 1]);
    reference(w, mw, vw, grads_w[t - 1], t, lrs[t - 1], true);
    reference(n, mn, vn, grads_n[t - 1], t, lrs[t - 1], false);
  }
  for (int i = 0; i < 3; ++i) CHECK(decayed[i].item<double>() == Approx(w[i]).epsilon(1e-12));
  for (int i = 0; i < 2; ++i) CHECK(exempt[i].item<double>() == Approx(n[i]).epsilon(1e-12));
  CHECK(adamw.step_count() == 3);
}

TEST_CASE("LR schedule: warmup, cosine, linear, constant", "[optim]") {
  ScheduleOptions s;
  s.type = LrScheduleType::kCosine;
  s.warmup_steps = 4;
  s.min_lr = 0.1;
  const double base = 1.0;
  const int64_t total = 14;  // decay over steps 4..13 (9 intervals)
  CHECK(learning_rate_at(0, total, base, s) == Approx(0.25));
  CHECK(learning_rate_at(3, total, base, s) == Approx(1.0));
  CHECK(learning_rate_at(4, total, base, s) == Approx(1.0));
  const double p = 3.0 / 9.0;
  CHECK(learning_rate_at(7, total, base, s) == Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * p))));
  CHECK(learning_rate_at(13, total, base, s) == Approx(0.1));
  CHECK(learning_rate_at(50, total, base, s) == Approx(0.1));
  s.type = LrScheduleType::kLinear;
  CHECK(learning_rate_at(7, total, base, s) == Approx(0.1 + 0.9 * (1 - p)));
  s.type = LrScheduleType::kConstant;
  CHECK(learning_rate_at(9, total, base, s) == Approx(1.0));
  CHECK(learning_rate_at(1, total, base, s) == Approx(0.5));
  CHECK(parse_lr_schedule_type("linear") == LrScheduleType::kLinear);
}

TEST_CASE("global grad-norm clipping", "[optim]") {
  auto a = torch::tensor({3.0f, 0.0f});
  auto b = torch::tensor({4.0f});
  CHECK(squared_norm({a, b}) == Approx(25.0));
  const double norm = clip_grad_norm({a, b}, 1.0);
  CHECK(norm == Approx(5.0));
  CHECK(a[0].item<double>() == Approx(3.0 / (5.0 + 1e-6)));
  CHECK(std::sqrt(squared_norm({a, b})) == Approx(1.0).epsilon(1e-5));
  auto c = torch::tensor({0.3f, 0.4f});
  CHECK(clip_grad_norm({c}, 1.0) == Approx(0.5));
  CHECK(c[0].item<double>() == Approx(0.3));  // under the limit: untouched
  CHECK(clip_grad_norm({c}, 0.0) == Approx(0.5));
}

TEST_CASE("CPU-offloaded AdamW equals the ATen AdamW", "[optim]") {
  AdamWOptions device_options;
  device_options.fused = false;  // the ATen tensor ops, the first implementation
  device_options.lr = 1e-2;
  device_options.weight_decay = 0.1;
  AdamWOptions offload_options = device_options;
  offload_options.offload = "cpu";
  auto generator = at::detail::createCPUGenerator(3);
  auto w0 = torch::randn({64, 33}, generator);
  auto b0 = torch::randn({33}, generator);
  auto wa = w0.clone().requires_grad_(true), wb = w0.clone().requires_grad_(true);
  auto ba = b0.clone().requires_grad_(true), bb = b0.clone().requires_grad_(true);
  AdamW on_device({{"w", wa, true}, {"norm.weight", ba, false}}, device_options);
  AdamW offloaded({{"w", wb, true}, {"norm.weight", bb, false}}, offload_options);
  for (int step = 0; step < 5; ++step) {
    auto gw = torch::randn({64, 33}, generator), gb = torch::randn({33}, generator);
    wa.mutable_grad() = gw.clone();
    wb.mutable_grad() = gw.clone();
    ba.mutable_grad() = gb.clone();
    bb.mutable_grad() = gb.clone();
    on_device.step(1e-2);
    offloaded.step(1e-2);
  }
  auto relative = [](const torch::Tensor& a, const torch::Tensor& b) {
    return ((a - b).norm() / b.norm()).item<double>();
  };
  CHECK(relative(wb, wa) <= 1e-6);
  CHECK(relative(bb, ba) <= 1e-6);
  CHECK_FALSE(torch::equal(wa, w0));
  AdamWOptions bad = offload_options;
  auto half = torch::zeros({4}, torch::kFloat64).requires_grad_(true);
  half.mutable_grad() = torch::ones({4}, torch::kFloat64);
  AdamW wrong({{"h", half, true}}, bad);
  CHECK_THROWS_AS(wrong.step(1e-3), ConfigError);
}

#include <algorithm>
#include <catch2/catch.hpp>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "deepseek_train/optim/cpu_adamw.h"

using namespace dst;

namespace {

// Gradients for one step: mostly N(0, scale), with every 7th element exactly zero and every 11th
// a tiny +-1e-12 (v then sits far below eps^2, so eps dominates the denominator).
std::vector<float> make_grads(std::mt19937& rng, size_t n, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i) {
    const float x = normal(rng);
    if (i % 7 == 3)
      g[i] = 0.0f;
    else if (i % 11 == 5)
      g[i] = x < 0 ? -1e-12f : 1e-12f;
    else
      g[i] = x;
  }
  return g;
}

// The update re-derived from the formulas (m as a weighted average rather than a lerp), in double.
void reference_step(std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                    const std::vector<float>& g, const AdamWStep& s, bool decay) {
  const double bc1 = 1.0 - std::pow(s.beta1, static_cast<double>(s.t));
  const double bc2 = 1.0 - std::pow(s.beta2, static_cast<double>(s.t));
  for (size_t i = 0; i < p.size(); ++i) {
    if (decay) p[i] *= 1.0 - s.lr * s.weight_decay;
    m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * g[i];
    v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * double(g[i]) * g[i];
    p[i] -= (s.lr / bc1) * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + s.eps);
  }
}

// |a - b| <= ulps * FLT_EPSILON * scale, with scale the magnitude of the operands the last
// rounding steps saw (so a result that cancels to ~0 is not held to ulps of itself).
bool close_ulps(float a, float b, double scale, double ulps) {
  return std::abs(double(a) - double(b)) <= ulps * FLT_EPSILON * scale;
}

}  // namespace

TEST_CASE("cpu_adamw_update matches a double-precision re-derivation over 5 steps", "[optim]") {
  struct Config {
    double lr, beta1, beta2, eps, weight_decay;
  };
  // beta1 = 0.9 takes ATen's small-weight lerp formula, beta1 = 0.3 (weight 0.7) the other one.
  const Config config =
      GENERATE(Config{1e-3, 0.9, 0.95, 1e-8, 0.1}, Config{1e-2, 0.3, 0.999, 1e-6, 0.05});
  const bool decay = GENERATE(true, false);
  CAPTURE(config.lr, config.beta1, decay);

  const size_t n = 1000;
  std::mt19937 rng(1234);
  // Parameters spread over 10^-3..10^0 in magnitude, so for some the update is as large as the
  // parameter itself and an error in the update is not hidden by the parameter's rounding.
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> exponent(-3.0f, 0.0f);
  std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f);
  for (size_t i = 0; i < n; ++i) p[i] = normal(rng) * std::pow(10.0f, exponent(rng));
  std::vector<double> p_ref(p.begin(), p.end()), m_ref(n, 0.0), v_ref(n, 0.0);
  std::vector<double> g_max(n, 0.0);  // running max |g| per element

  for (int64_t t = 1; t <= 5; ++t) {
    const std::vector<float> g = make_grads(rng, n, 0.5f * float(t));
    for (size_t i = 0; i < n; ++i) g_max[i] = std::max(g_max[i], double(std::abs(g[i])));
    const AdamWStep s{config.lr, config.beta1, config.beta2, config.eps, config.weight_decay, t};
    cpu_adamw_update(p.data(), g.data(), m.data(), v.data(), int64_t(n), s, decay);
    reference_step(p_ref, m_ref, v_ref, g, s, decay);

    // Tolerances: fp32 against fp64, eps = FLT_EPSILON = 2^-23 (1 ulp at 1). Per step:
    //  - v is a sum of non-negative terms: ~3 roundings a step plus beta2 and 1 - beta2 rounded
    //    to float, so its relative error grows by <= ~4 eps a step: bound 8 t eps |v_ref|.
    //  - m may cancel, so its error is relative to the largest gradient it has seen: ~4 roundings
    //    a step of quantities <= max|g|: bound 8 t eps max|g|.
    //  - p: two roundings of p a step (decay product, final sum) -> 4 t eps |p_ref| (2x margin),
    //    plus the error of the update. Its size lr/bc1 * |m| / (sqrt(v)/sqrt(bc2) + eps) is at
    //    most ~3 lr here (|m_hat| / sqrt(v_hat) <= ~sqrt(t) for these betas), and its relative
    //    error is that of m (<= 8 t eps against max|g| which sqrt(v_hat) bounds from below up to
    //    the same ~sqrt(t) factor) plus ~5 roundings: bound ~64 t eps lr a step.
    //  Summed: |p - p_ref| <= t eps (4 |p_ref| + 64 lr t). An error in a formula (bias correction,
    //  eps placement, lerp weight) moves p by O(lr * 1e-3) or more, 100x above this bound.
    const double eps = FLT_EPSILON, td = double(t);
    double worst_p = 0, worst_m = 0, worst_v = 0;
    for (size_t i = 0; i < n; ++i) {
      const double tol_p = td * eps * (4.0 * std::abs(p_ref[i]) + 64.0 * config.lr * td);
      const double tol_m = 8.0 * td * eps * g_max[i];
      const double tol_v = 8.0 * td * eps * v_ref[i];
      worst_p = std::max(worst_p, std::abs(p[i] - p_ref[i]) / tol_p);
      worst_m = std::max(worst_m, tol_m > 0 ? std::abs(m[i] - m_ref[i]) / tol_m : std::abs(m[i]));
      worst_v = std::max(worst_v, tol_v > 0 ? std::abs(v[i] - v_ref[i]) / tol_v : std::abs(v[i]));
    }
    CAPTURE(t, worst_p, worst_m, worst_v);  // worst error as a fraction of its tolerance
    CHECK(worst_p <= 1.0);
    CHECK(worst_m <= 1.0);
    CHECK(worst_v <= 1.0);
  }
}

TEST_CASE("cpu_adamw_update matches a scalar float loop across chunk and SIMD tails", "[optim]") {
  const int64_t n = 65536 * 2 + 7;  // two full 64 Ki chunks plus a 7-element tail, shorter than the
                                    // kernel's 32-element blocks and any SIMD width
  const bool decay = GENERATE(true, false);
  const double beta1 = GENERATE(0.9, 0.3);
  CAPTURE(decay, beta1);
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f);
  // Every 5th parameter starts at 0, so there p after step 1 is the update itself and its
  // accuracy is checked to the ulp, not hidden in the rounding of a larger p.
  for (int64_t i = 0; i < n; ++i) p[i] = i % 5 == 0 ? 0.0f : normal(rng);

  for (int64_t t = 1; t <= 3; ++t) {
    const std::vector<float> g = make_grads(rng, size_t(n), 1.0f);
    const AdamWStep s{1e-3, beta1, 0.95, 1e-8, 0.1, t};
    // The same formulas as a plain float loop, scalars rounded to float as in the kernel.
    const double bc1 = 1.0 - std::pow(s.beta1, double(t));
    const double bc2 = 1.0 - std::pow(s.beta2, double(t));
    const float decay_factor = float(1.0 - s.lr * s.weight_decay);
    const float w = float(1.0 - s.beta1), beta2 = float(s.beta2), c2 = float(1.0 - s.beta2);
    const float bc2_sqrt = float(std::sqrt(bc2)), eps = float(s.eps);
    const float neg_step = float(-(s.lr / bc1));
    std::vector<float> p_ref(p), m_ref(m), v_ref(v);
    std::vector<double> scale_p(n), scale_m(n);
    for (int64_t i = 0; i < n; ++i) {
      if (decay) p_ref[i] = p_ref[i] * decay_factor;
      scale_m[i] = std::abs(m_ref[i]) + std::abs(g[i]);
      m_ref[i] = std::abs(w) < 0.5f ? m_ref[i] + w * (g[i] - m_ref[i])
                                    : g[i] - (g[i] - m_ref[i]) * (1.0f - w);
      v_ref[i] = v_ref[i] * beta2 + c2 * g[i] * g[i];
      const float update = neg_step * m_ref[i] / (std::sqrt(v_ref[i]) / bc2_sqrt + eps);
      scale_p[i] = std::abs(p_ref[i]) + std::abs(update);
      p_ref[i] = p_ref[i] + update;
    }
    cpu_adamw_update(p.data(), g.data(), m.data(), v.data(), n, s, decay);

    // With the same operation order this is bit-exact on plain SSE/AVX builds; 2 ulp of the
    // operands' magnitude leaves room for a compiler contracting a multiply-add into an FMA.
    int64_t bad_p = 0, bad_m = 0, bad_v = 0, first_bad = -1;
    for (int64_t i = 0; i < n; ++i) {
      const bool ok_p = close_ulps(p[i], p_ref[i], scale_p[i], 2.0);
      const bool ok_m = close_ulps(m[i], m_ref[i], scale_m[i], 2.0);
      const bool ok_v = close_ulps(v[i], v_ref[i], v_ref[i], 2.0);
      bad_p += !ok_p;
      bad_m += !ok_m;
      bad_v += !ok_v;
      if (first_bad < 0 && !(ok_p && ok_m && ok_v)) first_bad = i;
    }
    CAPTURE(t, first_bad);
    CHECK(bad_p == 0);
    CHECK(bad_m == 0);
    CHECK(bad_v == 0);
    // Compare the next step from identical state, so each step is checked on its own.
    p = p_ref;
    m = m_ref;
    v = v_ref;
  }
}

TEST_CASE("cpu_adamw_update with n = 0 is a no-op", "[optim]") {
  std::vector<float> p = {1.0f, -2.0f}, g = {0.5f, 0.5f}, m = {0.25f, 0.0f}, v = {0.125f, 1.0f};
  const std::vector<float> p0 = p, m0 = m, v0 = v;
  const AdamWStep s{1e-3, 0.9, 0.95, 1e-8, 0.1, 1};
  cpu_adamw_update(p.data(), g.data(), m.data(), v.data(), 0, s, true);
  CHECK(p == p0);
  CHECK(m == m0);
  CHECK(v == v0);
  cpu_adamw_update(nullptr, nullptr, nullptr, nullptr, 0, s, true);  // must not touch memory
}

TEST_CASE("cpu_adamw_update: zero gradient on the first step leaves the state unchanged",
          "[optim]") {
  // m = v = 0 after the first step, so the update is -step_size * 0 / eps = 0; without weight
  // decay p keeps its exact value; with it p is only scaled by float(1 - lr * weight_decay).
  const int64_t n = 100;
  std::vector<float> p(n), g(n, 0.0f), m(n, 0.0f), v(n, 0.0f);
  for (int64_t i = 0; i < n; ++i) p[i] = 0.37f * float(i - 50);
  const std::vector<float> p0 = p;
  const AdamWStep s{1e-2, 0.9, 0.95, 1e-8, 0.1, 1};

  cpu_adamw_update(p.data(), g.data(), m.data(), v.data(), n, s, false);
  CHECK(p == p0);
  CHECK(m == std::vector<float>(n, 0.0f));
  CHECK(v == std::vector<float>(n, 0.0f));

  cpu_adamw_update(p.data(), g.data(), m.data(), v.data(), n, s, true);
  const float decay_factor = float(1.0 - s.lr * s.weight_decay);
  for (int64_t i = 0; i < n; ++i) CHECK(p[i] == p0[i] * decay_factor);
}

TEST_CASE("cpu_adamw_update rejects a negative count and a step count below 1", "[optim]") {
  float p = 1.0f, g = 1.0f, m = 0.0f, v = 0.0f;
  CHECK_THROWS(
      cpu_adamw_update(&p, &g, &m, &v, -1, AdamWStep{1e-3, 0.9, 0.95, 1e-8, 0.1, 1}, true));
  CHECK_THROWS(cpu_adamw_update(&p, &g, &m, &v, 1, AdamWStep{1e-3, 0.9, 0.95, 1e-8, 0.1, 0}, true));
  CHECK(p == 1.0f);
}

// The RDP accountant's own properties (Opacus's numbers are checked in
// tests/interop/test_privacy_interop.sh): the closed forms at q = 0 and q = 1, the integer-order
// sum against a direct binomial sum, the fractional series meeting the integer formula, budgets
// growing with steps and shrinking with noise, the noise solver meeting its target, bad input.
#include <catch2/catch.hpp>
#include <cmath>

#include "deepseek_train/core/error.h"
#include "deepseek_train/privacy/rdp_accountant.h"

using namespace dst;

namespace {

// RDP at integer order a, summed directly: log(sum_k C(a,k) (1-q)^(a-k) q^k
// e^((k²-k)/(2σ²)))/(a-1).
double direct_integer_rdp(double q, double sigma, int a) {
  double sum = 0.0, binomial = 1.0;
  for (int k = 0; k <= a; ++k) {
    sum += binomial * std::pow(1 - q, a - k) * std::pow(q, k) *
           std::exp((k * k - k) / (2 * sigma * sigma));
    binomial = binomial * (a - k) / (k + 1);
  }
  return std::log(sum) / (a - 1);
}

}  // namespace

TEST_CASE("privacy: RDP of the sampled Gaussian mechanism", "[privacy]") {
  CHECK(sampled_gaussian_rdp(0.0, 1.0, 4.5) == 0.0);
  CHECK(sampled_gaussian_rdp(1.0, 2.0, 8.0) == Approx(8.0 / 8.0));  // α / (2σ²)
  CHECK(std::isinf(sampled_gaussian_rdp(0.1, 0.0, 3.0)));
  for (double q : {0.001, 0.01, 0.2}) {
    for (double sigma : {0.7, 1.1, 3.0}) {
      for (int a : {2, 3, 8, 20}) {
        INFO("q " << q << " sigma " << sigma << " order " << a);
        // (The direct sum loses digits to log(1 + tiny) at small q: 1e-7 relative.)
        CHECK(sampled_gaussian_rdp(q, sigma, a) ==
              Approx(direct_integer_rdp(q, sigma, a)).epsilon(1e-7));
        // The fractional series just past an integer order meets the integer formula.
        CHECK(sampled_gaussian_rdp(q, sigma, a + 1e-7) ==
              Approx(sampled_gaussian_rdp(q, sigma, a)).epsilon(1e-5));
      }
      // RDP grows with the order.
      double previous = 0.0;
      for (double order : default_rdp_orders()) {
        const double rdp = sampled_gaussian_rdp(q, sigma, order);
        CHECK(rdp >= previous * (1 - 1e-12));
        previous = rdp;
      }
    }
  }
  // Subsampling amplifies privacy: far below the full-batch Gaussian's α / (2σ²).
  CHECK(sampled_gaussian_rdp(0.01, 1.0, 4.0) < 0.01 * 4.0 / 2.0);
}

TEST_CASE("privacy: epsilon from RDP, composition, and the noise for a target", "[privacy]") {
  const std::vector<double> orders = default_rdp_orders();
  REQUIRE(orders.size() == 99 + 52);
  CHECK(orders.front() == Approx(1.1));
  CHECK(orders.back() == 63.0);
  RdpAccountant short_run, long_run;
  short_run.step(1.1, 0.01, 100);
  long_run.step(1.1, 0.01, 1000);
  CHECK(long_run.steps() == 1000);
  const PrivacySpent a = short_run.spent(1e-5), b = long_run.spent(1e-5);
  CHECK(a.epsilon > 0);
  CHECK(b.epsilon > a.epsilon);
  // Composition adds RDP: ten steps at once equal ten single steps.
  RdpAccountant one_by_one;
  for (int i = 0; i < 1000; ++i) one_by_one.step(1.1, 0.01);
  CHECK(one_by_one.spent(1e-5).epsilon == Approx(b.epsilon).epsilon(1e-9));
  // More noise, less epsilon; a larger delta, less epsilon.
  RdpAccountant noisier;
  noisier.step(2.0, 0.01, 1000);
  CHECK(noisier.spent(1e-5).epsilon < b.epsilon);
  CHECK(long_run.spent(1e-3).epsilon < b.epsilon);
  // The solver's noise meets the target from below, within its tolerance.
  for (double target : {1.0, 8.0}) {
    const double sigma = noise_multiplier_for_epsilon(target, 1e-5, 0.01, 1000);
    RdpAccountant check;
    check.step(sigma, 0.01, 1000);
    const double epsilon = check.spent(1e-5).epsilon;
    CHECK(epsilon <= target);
    CHECK(epsilon >= target - 0.01);
  }
}

TEST_CASE("privacy: bad accountant input is a one-line error", "[privacy]") {
  CHECK_THROWS_WITH(sampled_gaussian_rdp(1.5, 1.0, 2.0),
                    Catch::StartsWith("privacy: the sample rate must be in [0, 1], got 1.5"));
  CHECK_THROWS_WITH(sampled_gaussian_rdp(0.1, -1.0, 2.0),
                    Catch::StartsWith("privacy: the noise multiplier must be non-negative"));
  CHECK_THROWS_WITH(sampled_gaussian_rdp(0.1, 1.0, 1.0),
                    Catch::StartsWith("privacy: RDP orders must be above 1"));
  RdpAccountant accountant;
  accountant.step(1.0, 0.01, 10);
  CHECK_THROWS_WITH(accountant.spent(0.0), Catch::StartsWith("privacy.delta must be in (0, 1)"));
  CHECK_THROWS_WITH(noise_multiplier_for_epsilon(0.01, 1e-10, 1.0, 100000),
                    Catch::StartsWith("privacy: epsilon 0.01 at delta 1e-10 cannot be met by "
                                      "100000 steps at sample rate 1"));
}

// Rényi-DP accounting of DP-SGD. One step of DP-SGD is the sampled Gaussian mechanism: every
// example joins the step with probability q (Poisson sampling), each example's gradient is
// clipped to norm C, and the sum gets Gaussian noise of standard deviation σ·C (σ: the noise
// multiplier). Its Rényi differential privacy at order α follows Mironov, Talwar and Zhang 2019,
// "Rényi Differential Privacy of the Sampled Gaussian Mechanism" (the binomial sum for integer α,
// the erfc series for fractional α); steps compose by adding RDP; (ε, δ) follows from Balle et
// al. 2020, "Hypothesis Testing Interpretations and Rényi Differential Privacy" (Theorem 21),
// minimised over the orders. The default orders are Opacus's, so budgets compare with its RDP
// accountant. Torch-free.
#pragma once

#include <cstdint>
#include <vector>

namespace dst {

// 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63.
std::vector<double> default_rdp_orders();

// RDP of one step of the sampled Gaussian mechanism at order `order` (> 1): 0 when q is 0,
// α / (2σ²) when q is 1, infinite when σ is 0. ConfigError for q outside [0, 1], σ < 0, α <= 1.
double sampled_gaussian_rdp(double sample_rate, double noise_multiplier, double order);

struct PrivacySpent {
  double epsilon = 0.0;
  double order = 0.0;  // the order that gave the smallest ε
};

// The smallest (ε, δ) bound over `orders` given the RDP spent at each; ε infinite when no order
// gives a finite one. ConfigError for δ outside (0, 1) or mismatched lengths.
PrivacySpent epsilon_from_rdp(const std::vector<double>& orders, const std::vector<double>& rdp,
                              double delta);

// Accumulates the RDP of the steps taken (each with its own σ and q), at fixed orders.
class RdpAccountant {
 public:
  explicit RdpAccountant(std::vector<double> orders = default_rdp_orders());
  void step(double noise_multiplier, double sample_rate, int64_t steps = 1);
  PrivacySpent spent(double delta) const { return epsilon_from_rdp(orders_, rdp_, delta); }
  int64_t steps() const { return steps_; }

 private:
  std::vector<double> orders_;
  std::vector<double> rdp_;
  int64_t steps_ = 0;
};

// The noise multiplier that keeps `steps` steps at `sample_rate` within target_epsilon at delta:
// bisection between 0 and an upper bound doubled from 20 until the ε of the bound is within
// `epsilon_tolerance` below the target (as Opacus's get_noise_multiplier); returns the upper
// bound. `spent_before`: steps already taken (a resumed run), whose RDP the new steps add to.
// ConfigError, one line, when the target cannot be met (σ above 1e6).
double noise_multiplier_for_epsilon(double target_epsilon, double delta, double sample_rate,
                                    int64_t steps, double epsilon_tolerance = 0.01,
                                    const RdpAccountant& spent_before = RdpAccountant());

}  // namespace dst

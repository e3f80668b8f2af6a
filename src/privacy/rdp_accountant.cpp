#include "deepseek_train/privacy/rdp_accountant.h"

#include <cmath>
#include <limits>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)) and log(exp(a) - exp(b)) (a >= b), stable for large magnitudes.
double log_add(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  const double high = std::max(a, b), low = std::min(a, b);
  return high + std::log1p(std::exp(low - high));
}

double log_sub(double a, double b) {
  if (b == -kInf) return a;
  if (a <= b) return -kInf;  // the difference vanished (or rounding made it negative)
  return a + std::log1p(-std::exp(b - a));
}

// log(erfc(x)), also where erfc underflows (x > ~26): the asymptotic expansion
// erfc(x) ~ exp(-x²) / (x √π) · (1 - 1/(2x²) + 3/(4x⁴) - 15/(8x⁶)).
double log_erfc(double x) {
  if (x < 20.0) return std::log(std::erfc(x));
  const double r = 1.0 / (x * x);
  return -x * x - std::log(x) - 0.5 * std::log(M_PI) +
         std::log(1.0 - 0.5 * r + 0.75 * r * r - 1.875 * r * r * r);
}

// log A_α for integer α: log of sum_k C(α, k) (1-q)^(α-k) q^k exp((k² - k) / (2σ²)).
double log_a_integer(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  for (int64_t k = 0; k <= alpha; ++k) {
    const double log_binomial =
        std::lgamma(alpha + 1.0) - std::lgamma(k + 1.0) - std::lgamma(alpha - k + 1.0);
    const double term = log_binomial + k * std::log(q) + (alpha - k) * std::log1p(-q) +
                        (static_cast<double>(k) * k - k) / (2 * sigma * sigma);
    log_a = log_add(log_a, term);
  }
  return log_a;
}

// log A_α for fractional α: the paper's two series over i = 0, 1, ... split at
// z0 = σ² log(1/q - 1) + 1/2, with the generalised binomial coefficient C(α, i), whose sign
// alternates once i exceeds α; summed until both terms fall below exp(-30).
double log_a_fractional(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1.0 / q - 1.0) + 0.5;
  const double scale = std::sqrt(2.0) * sigma;
  double log_binomial = 0.0;  // log |C(α, i)|
  bool positive = true;       // sign of C(α, i)
  for (int64_t i = 0;; ++i) {
    if (i > 0) {  // C(α, i) = C(α, i - 1) (α - i + 1) / i
      const double factor = alpha - static_cast<double>(i) + 1.0;
      log_binomial += std::log(std::abs(factor)) - std::log(static_cast<double>(i));
      if (factor < 0) positive = !positive;
    }
    const double j = alpha - static_cast<double>(i);
    const double s0 = log_binomial + i * std::log(q) + j * std::log1p(-q) +
                      (static_cast<double>(i) * i - i) / (2 * sigma * sigma) + std::log(0.5) +
                      log_erfc((static_cast<double>(i) - z0) / scale);
    const double s1 = log_binomial + j * std::log(q) + i * std::log1p(-q) +
                      (j * j - j) / (2 * sigma * sigma) + std::log(0.5) +
                      log_erfc((z0 - j) / scale);
    if (positive) {
      log_a0 = log_add(log_a0, s0);
      log_a1 = log_add(log_a1, s1);
    } else {
      log_a0 = log_sub(log_a0, s0);
      log_a1 = log_sub(log_a1, s1);
    }
    if (std::max(s0, s1) < -30.0) break;
    DST_CHECK(i < 100000, InternalError,
              "RDP series for order " << alpha << ", q " << q << ", sigma " << sigma
                                      << " did not converge");
  }
  return log_add(log_a0, log_a1);
}

}  // namespace

std::vector<double> default_rdp_orders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1.0 + x / 10.0);
  for (int order = 12; order < 64; ++order) orders.push_back(order);
  return orders;
}

double sampled_gaussian_rdp(double sample_rate, double noise_multiplier, double order) {
  DST_CHECK(sample_rate >= 0 && sample_rate <= 1, ConfigError,
            "privacy: the sample rate must be in [0, 1], got " << sample_rate);
  DST_CHECK(noise_multiplier >= 0, ConfigError,
            "privacy: the noise multiplier must be non-negative, got " << noise_multiplier);
  DST_CHECK(order > 1, ConfigError, "privacy: RDP orders must be above 1, got " << order);
  if (sample_rate == 0) return 0.0;
  if (noise_multiplier == 0 || std::isinf(order)) return kInf;
  if (sample_rate == 1) return order / (2 * noise_multiplier * noise_multiplier);
  const double log_a =
      std::floor(order) == order
          ? log_a_integer(sample_rate, noise_multiplier, static_cast<int64_t>(order))
          : log_a_fractional(sample_rate, noise_multiplier, order);
  return log_a / (order - 1);
}

PrivacySpent epsilon_from_rdp(const std::vector<double>& orders, const std::vector<double>& rdp,
                              double delta) {
  DST_CHECK(delta > 0 && delta < 1, ConfigError, "privacy.delta must be in (0, 1), got " << delta);
  DST_CHECK(orders.size() == rdp.size(), InternalError, "one RDP value per order");
  PrivacySpent best{kInf, 0.0};
  for (size_t i = 0; i < orders.size(); ++i) {
    const double a = orders[i];
    const double epsilon =
        rdp[i] - (std::log(delta) + std::log(a)) / (a - 1) + std::log((a - 1) / a);
    if (!std::isnan(epsilon) && epsilon < best.epsilon) best = {epsilon, a};
  }
  return best;
}

RdpAccountant::RdpAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {}

void RdpAccountant::step(double noise_multiplier, double sample_rate, int64_t steps) {
  for (size_t i = 0; i < orders_.size(); ++i)
    rdp_[i] += static_cast<double>(steps) *
               sampled_gaussian_rdp(sample_rate, noise_multiplier, orders_[i]);
  steps_ += steps;
}

double noise_multiplier_for_epsilon(double target_epsilon, double delta, double sample_rate,
                                    int64_t steps, double epsilon_tolerance,
                                    const RdpAccountant& spent_before) {
  DST_CHECK(target_epsilon > 0, ConfigError,
            "privacy.target_epsilon must be positive, got " << target_epsilon);
  const auto epsilon_at = [&](double sigma) {
    RdpAccountant accountant = spent_before;
    accountant.step(sigma, sample_rate, steps);
    return accountant.spent(delta).epsilon;
  };
  // The upper bound starts at 20 and doubles until it meets the target.
  double low = 0.0, high = 10.0, epsilon_high = kInf;
  while (epsilon_high > target_epsilon) {
    high *= 2;
    DST_CHECK(high <= 1e6, ConfigError,
              "privacy: epsilon " << target_epsilon << " at delta " << delta << " cannot be met by "
                                  << steps << " steps at sample rate " << sample_rate
                                  << (spent_before.steps() > 0
                                          ? " after the " + std::to_string(spent_before.steps()) +
                                                " steps already taken"
                                          : std::string())
                                  << " with any noise multiplier up to 1e6 (fewer steps or a "
                                     "smaller sample rate would)");
    epsilon_high = epsilon_at(high);
  }
  while (target_epsilon - epsilon_high > epsilon_tolerance) {
    const double mid = (low + high) / 2;
    const double epsilon = epsilon_at(mid);
    if (epsilon < target_epsilon) {
      high = mid;
      epsilon_high = epsilon;
    } else {
      low = mid;
    }
  }
  return high;
}

}  // namespace dst

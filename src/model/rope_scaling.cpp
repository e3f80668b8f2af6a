#include "deepseek_train/model/rope_scaling.h"

#include <algorithm>
#include <cmath>

namespace dst {

namespace {

constexpr double kPi = 3.14159265358979323846;

bool is_yarn(const ModelConfig& c) { return c.rope_scaling.rope_type == "yarn"; }

// The rotary dimension whose wavelength makes `rotations` turns over the original context.
double correction_dimension(double rotations, double dim, double base, double original_max) {
  return dim * std::log(original_max / (rotations * 2 * kPi)) / (2 * std::log(base));
}

}  // namespace

double yarn_mscale(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

std::vector<float> rotary_inverse_frequencies(const ModelConfig& c) {
  const int64_t dim = c.qk_rope_head_dim;
  const double base = c.rope_theta;
  std::vector<float> inv_freq(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i)
    inv_freq[i] = static_cast<float>(
        1.0 / static_cast<float>(std::pow(base, static_cast<float>(2 * i) / dim)));
  if (!is_yarn(c)) return inv_freq;
  const RopeScaling& r = c.rope_scaling;
  const double original_max = r.original_max_position_embeddings > 0
                                  ? static_cast<double>(r.original_max_position_embeddings)
                                  : static_cast<double>(c.max_position_embeddings);
  double low = correction_dimension(r.beta_fast, static_cast<double>(dim), base, original_max);
  double high = correction_dimension(r.beta_slow, static_cast<double>(dim), base, original_max);
  if (r.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float ramp =
        static_cast<float>(std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0));
    const float extrapolated = inv_freq[i];
    const float interpolated = static_cast<float>(extrapolated / r.factor);
    const float keep = 1.0f - ramp;  // share of the extrapolated frequency
    inv_freq[i] = interpolated * (1.0f - keep) + extrapolated * keep;
  }
  return inv_freq;
}

double rotary_attention_factor(const ModelConfig& c) {
  if (!is_yarn(c)) return 1.0;
  const RopeScaling& r = c.rope_scaling;
  if (r.attention_factor > 0) return r.attention_factor;
  if (r.mscale != 0 && r.mscale_all_dim != 0)
    return yarn_mscale(r.factor, r.mscale) / yarn_mscale(r.factor, r.mscale_all_dim);
  return yarn_mscale(r.factor, 1.0);
}

double mla_softmax_scale(const ModelConfig& c) {
  double scale = 1.0 / std::sqrt(static_cast<double>(c.qk_head_dim()));
  if (is_yarn(c) && c.rope_scaling.mscale_all_dim != 0) {
    const double m = yarn_mscale(c.rope_scaling.factor, c.rope_scaling.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

}  // namespace dst

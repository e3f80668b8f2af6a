#include "deepseek_train/precision/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "deepseek_train/core/error.h"

namespace dst {

void LossScalerOptions::validate() const {
  const char* prefix = "precision.loss_scaler.";
  DST_CHECK(std::isfinite(min_scale) && min_scale > 0, ConfigError,
            prefix << "min_scale must be > 0 (got " << min_scale << ")");
  DST_CHECK(
      std::isfinite(max_scale) && max_scale >= min_scale, ConfigError,
      prefix << "max_scale must be >= min_scale (got " << max_scale << " < " << min_scale << ")");
  DST_CHECK(
      std::isfinite(initial_scale) && initial_scale >= min_scale && initial_scale <= max_scale,
      ConfigError,
      prefix << "initial_scale must be in [min_scale, max_scale] = [" << min_scale << ", "
             << max_scale << "] (got " << initial_scale << ")");
  DST_CHECK(std::isfinite(growth_factor) && growth_factor > 1, ConfigError,
            prefix << "growth_factor must be > 1 (got " << growth_factor << ")");
  DST_CHECK(backoff_factor > 0 && backoff_factor < 1, ConfigError,
            prefix << "backoff_factor must be in (0, 1) (got " << backoff_factor << ")");
  DST_CHECK(growth_interval >= 1, ConfigError,
            prefix << "growth_interval must be >= 1 (got " << growth_interval << ")");
}

DynamicLossScaler::DynamicLossScaler(const LossScalerOptions& options, bool enabled)
    : options_(options), enabled_(enabled), scale_(enabled ? options.initial_scale : 1.0) {
  options_.validate();
}

bool DynamicLossScaler::update(bool found_non_finite) {
  if (!enabled_) {
    if (found_non_finite) ++skipped_steps_;
    return !found_non_finite;
  }
  if (found_non_finite) {
    scale_ = std::max(options_.min_scale, scale_ * options_.backoff_factor);
    clean_steps_ = 0;
    ++skipped_steps_;
    return false;
  }
  ++clean_steps_;
  // >= rather than ==: a checkpoint written under a larger growth_interval may resume past it.
  if (clean_steps_ >= options_.growth_interval) {
    scale_ = std::min(options_.max_scale, scale_ * options_.growth_factor);
    clean_steps_ = 0;
  }
  return true;
}

LossScalerState DynamicLossScaler::state() const {
  LossScalerState s;
  s.scale = scale_;
  s.clean_steps = clean_steps_;
  s.skipped_steps = skipped_steps_;
  return s;
}

void DynamicLossScaler::set_state(const LossScalerState& state) {
  DST_CHECK(
      std::isfinite(state.scale) && state.scale > 0, CheckpointError,
      "loss scaler: invalid checkpointed scale " << state.scale << " (must be finite and > 0)");
  DST_CHECK(state.clean_steps >= 0 && state.skipped_steps >= 0, CheckpointError,
            "loss scaler: invalid checkpointed counts clean_steps "
                << state.clean_steps << " skipped_steps " << state.skipped_steps
                << " (must be >= 0)");
  skipped_steps_ = state.skipped_steps;
  if (enabled_) {
    scale_ = state.scale;
    clean_steps_ = state.clean_steps;
  }
}

}  // namespace dst

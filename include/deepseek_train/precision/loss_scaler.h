// Dynamic loss scaling for fp16 training, as in torch.cuda.amp.GradScaler / Megatron-LM. The loss
// is multiplied by scale() before backward so small fp16 gradients do not flush to zero; gradients
// are multiplied by inverse_scale() before the optimizer step. After every step's (globally agreed)
// inf/NaN check, update() backs the scale off and skips the step on overflow, and grows it after
// growth_interval consecutive clean steps. Torch-free: the caller owns the tensors.
#pragma once

#include <cstdint>

namespace dst {

// Recipe section `precision.loss_scaler:`.
struct LossScalerOptions {
  double initial_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;  // consecutive clean steps before the scale grows
  double min_scale = 1.0;
  double max_scale = 16777216.0;  // 2^24

  // Throws ConfigError naming the key (e.g. "precision.loss_scaler.growth_factor must be > 1").
  void validate() const;
};

// What a checkpoint stores to resume the scaler exactly.
struct LossScalerState {
  double scale = 1.0;
  int64_t clean_steps = 0;    // clean steps since the scale last changed
  int64_t skipped_steps = 0;  // total steps skipped for non-finite gradients
  bool operator==(const LossScalerState& o) const {
    return scale == o.scale && clean_steps == o.clean_steps && skipped_steps == o.skipped_steps;
  }
};

class DynamicLossScaler {
 public:
  // Validates the options (ConfigError). A disabled scaler (bf16/fp32 training) keeps scale 1.0.
  explicit DynamicLossScaler(const LossScalerOptions& options, bool enabled = true);

  double scale() const { return scale_; }  // 1.0 when disabled
  double inverse_scale() const { return 1.0 / scale_; }

  // Call once per optimizer step after the inf/NaN check of the unscaled gradients (agreed across
  // all ranks). Returns true when the step should be applied, false when it must be skipped.
  // Enabled: on overflow scale = max(min_scale, scale * backoff_factor), the clean-step counter
  // resets and skipped_steps increments; otherwise the counter increments and, on reaching
  // growth_interval, scale = min(max_scale, scale * growth_factor) and the counter resets.
  // Disabled: the scale and the clean-step counter never change; skipped steps are still counted.
  bool update(bool found_non_finite);

  int64_t skipped_steps() const { return skipped_steps_; }
  int64_t clean_steps_since_change() const { return clean_steps_; }
  bool enabled() const { return enabled_; }
  const LossScalerOptions& options() const { return options_; }

  LossScalerState state() const;
  // Restores a checkpointed state; throws CheckpointError unless scale is finite and > 0 and the
  // counts are >= 0. A disabled scaler restores only skipped_steps (its scale stays 1.0).
  void set_state(const LossScalerState& state);

 private:
  LossScalerOptions options_;
  bool enabled_;
  double scale_;
  int64_t clean_steps_ = 0;
  int64_t skipped_steps_ = 0;
};

}  // namespace dst

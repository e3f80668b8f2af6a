#include "deepseek_train/privacy/privacy_options.h"

#include <cmath>

#include "deepseek_train/core/error.h"

namespace dst {

void PrivacyOptions::validate() const {
  DST_CHECK(std::isfinite(max_grad_norm) && max_grad_norm >= 0, ConfigError,
            "privacy.max_grad_norm must be a positive number, got " << max_grad_norm);
  DST_CHECK(std::isfinite(noise_multiplier) && noise_multiplier >= 0, ConfigError,
            "privacy.noise_multiplier must be a positive number, got " << noise_multiplier);
  DST_CHECK(std::isfinite(target_epsilon) && target_epsilon >= 0, ConfigError,
            "privacy.target_epsilon must be a positive number, got " << target_epsilon);
  if (!enabled()) {
    DST_CHECK(noise_multiplier == 0 && target_epsilon == 0, ConfigError,
              "privacy.max_grad_norm is required for DP-SGD (the clipping bound of each "
              "example's gradient, e.g. 1.0)");
    return;
  }
  DST_CHECK((noise_multiplier > 0) != (target_epsilon > 0), ConfigError,
            "privacy: give exactly one of noise_multiplier and target_epsilon");
  DST_CHECK(delta > 0 && delta < 1, ConfigError, "privacy.delta must be in (0, 1), got " << delta);
  DST_CHECK(accountant == "rdp", ConfigError,
            "privacy.accountant '" << accountant
                                   << "' is not available; use rdp (prv is not implemented)");
  DST_CHECK(sampling == "poisson" || sampling == "shuffle", ConfigError,
            "privacy.sampling '" << sampling << "' is not one of poisson, shuffle");
}

}  // namespace dst

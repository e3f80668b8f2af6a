// dstrain privacy: the (ε, δ) budget of DP-SGD training before running it — ε of given steps at a
// sample rate and noise multiplier, or the noise multiplier that meets a target ε (RDP
// accountant, privacy/rdp_accountant.h).
#include <cstdio>

#include "commands.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/privacy/rdp_accountant.h"

namespace dst::cli {

int run_privacy(const PrivacyArgs& args) {
  DST_CHECK(args.steps > 0, ConfigError, "privacy: --steps must be positive, got " << args.steps);
  DST_CHECK((args.noise_multiplier > 0) != (args.target_epsilon > 0), ConfigError,
            "privacy: give exactly one of --noise-multiplier and --target-epsilon (positive)");
  double sigma = args.noise_multiplier;
  if (args.target_epsilon > 0)
    sigma = noise_multiplier_for_epsilon(args.target_epsilon, args.delta, args.sample_rate,
                                         args.steps, args.epsilon_tolerance);
  RdpAccountant accountant;
  accountant.step(sigma, args.sample_rate, args.steps);
  const PrivacySpent spent = accountant.spent(args.delta);
  std::printf(
      "epsilon %.17g delta %.17g order %.17g noise_multiplier %.17g sample_rate %.17g steps "
      "%lld\n",
      spent.epsilon, args.delta, spent.order, sigma, args.sample_rate,
      static_cast<long long>(args.steps));
  return 0;
}

}  // namespace dst::cli

// The recipe's `privacy:` section: DP-SGD (per-example clipping to max_grad_norm, Gaussian noise
// of noise_multiplier x max_grad_norm per step, Poisson or shuffled sampling) and its budget
// (ε at delta by the RDP accountant, or the noise multiplier solved for target_epsilon).
// Torch-free.
#pragma once

#include <cstdint>
#include <string>

namespace dst {

struct PrivacyOptions {
  double max_grad_norm = 0.0;     // C, each example's gradient clipped to it; 0: DP-SGD off
  double noise_multiplier = 0.0;  // σ (> 0); or 0 with target_epsilon
  double target_epsilon = 0.0;    // ε to spend over train.steps (> 0); or 0 with noise_multiplier
  double delta = 1e-5;
  std::string accountant = "rdp";    // rdp (prv: not implemented)
  std::string sampling = "poisson";  // poisson | shuffle (fixed batches, accounted as Poisson)
  // Key of the noise and of Poisson sampling. 0 (default): a secret drawn at start-up from the
  // operating system, so nobody can subtract the noise; set it only to reproduce a run.
  uint64_t noise_seed = 0;

  bool enabled() const { return max_grad_norm > 0; }
  // ConfigError naming privacy.<key> for a setting out of range or missing.
  void validate() const;
};

// Steps DP-SGD took with one noise multiplier and sampling rate; a run's history is a list of
// them (a resumed run may change either), from which the accountant is rebuilt.
struct PrivacySegment {
  double noise_multiplier = 0.0;
  double sample_rate = 0.0;
  int64_t steps = 0;
};

// The budget DP-SGD has spent after a step and what it is spent with.
struct PrivacyReport {
  double epsilon = 0.0;  // at `delta`, by the RDP accountant, over every step so far
  double delta = 0.0;
  double sample_rate = 0.0;       // q: the chance of each example to join a step
  double noise_multiplier = 0.0;  // σ: noise std / max_grad_norm
  int64_t examples = 0;           // examples in this step's batch (varies under Poisson)
  double clipped_fraction = 0.0;  // share of them whose gradient norm exceeded max_grad_norm
};

}  // namespace dst

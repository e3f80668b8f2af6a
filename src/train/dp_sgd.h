// DP-SGD inside Trainer::train_step (recipe section `privacy:`, privacy/privacy_options.h).
// Per micro-batch, two passes over the same rows (the CPU generator replayed, so dropout masks
// agree):
//   1. a forward with the per-example tap active (privacy/per_example_tap.h) and a backward to
//      the layers' outputs only: each example's gradient norm ||g_i||, no parameter gradient and
//      no engine hook (ZeRO-3 gathers its parameters around it and runs without unit hooks);
//   2. the engines' usual forward and backward of Σ_i w_i ℓ_i, ℓ_i example i's mean token loss,
//      w_i = min(1, C / (||g_i|| + 1e-6)) / E[B]: the engines reduce Σ_i clip(g_i) / E[B].
// After the last micro-batch every owner of a gradient element adds N(0, (σ C / E[B])²) keyed by
// (key, step, parameter, element) (privacy/dp_noise.h), so every layout applies the same update.
// The RDP accountant (privacy/rdp_accountant.h) records each step's (σ, q).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/privacy/privacy_options.h"
#include "deepseek_train/privacy/rdp_accountant.h"
#include "deepseek_train/sharding/data_parallel_engine.h"
#include "deepseek_train/train/step_types.h"

namespace dst {

class CausalLM;

class DpSgd {
 public:
  // `key`: the secret of the noise (privacy.noise_seed, or drawn per run).
  DpSgd(PrivacyOptions options, uint64_t key);

  // Before the first step (after a resume's restore_history): q, E[B] (sequences per step over
  // all ranks) and the run's total steps; solves σ for privacy.target_epsilon over the steps
  // still to take, on top of those already accounted (ConfigError when it cannot be met).
  void plan(double sample_rate, double expected_batch, int64_t total_steps);
  bool planned() const { return expected_batch_ > 0; }
  // A resumed run: the steps its checkpoint recorded (provenance), accounted again.
  void restore_history(const std::vector<PrivacySegment>& history);
  const std::vector<PrivacySegment>& history() const { return history_; }

  // Pass 1: w_i for each row of `batch` (fp32 [rows]; 0 for rows without target tokens), the
  // rows holding an example and those of them clipped.
  struct ExampleWeights {
    at::Tensor weights;
    int64_t examples = 0;
    int64_t clipped = 0;
  };
  ExampleWeights example_weights(CausalLM& model, DataParallelEngine& engine,
                                 const MicroBatch& batch);
  // Pass 2's objective from the logits: Σ_i w_i ℓ_i (differentiable), and the rows' summed token
  // losses (the reported loss's numerator).
  static std::pair<at::Tensor, double> weighted_loss(const CausalLM& model,
                                                     const at::Tensor& logits,
                                                     const at::Tensor& labels,
                                                     const at::Tensor& weights);
  // After the step's backward: the noise on every gradient element this rank stores for
  // `engines`, for optimizer step `step` (1-based); then accounts the step. `examples` and
  // `clipped`: the step's, over every rank.
  PrivacyReport finish_step(std::vector<std::unique_ptr<DataParallelEngine>>& engines, int64_t step,
                            int64_t examples, int64_t clipped);

  const PrivacyOptions& options() const { return options_; }
  double noise_multiplier() const { return noise_multiplier_; }
  double sample_rate() const { return sample_rate_; }
  uint64_t key() const { return key_; }
  PrivacySpent spent() const { return accountant_.spent(options_.delta); }

 private:
  // Mean token loss of each row ([rows], differentiable) and the rows' summed token losses.
  static std::pair<at::Tensor, double> row_losses(const CausalLM& model, const at::Tensor& logits,
                                                  const at::Tensor& labels);
  PrivacyOptions options_;
  uint64_t key_;
  double noise_multiplier_ = 0.0, sample_rate_ = 0.0, expected_batch_ = 0.0;
  RdpAccountant accountant_;
  std::vector<PrivacySegment> history_;
};

// A secret 64-bit key drawn by world rank 0 from the operating system and broadcast, or
// `fixed` when non-zero (collective over `world`).
uint64_t agreed_secret_key(comm::Communicator& world, uint64_t fixed);

}  // namespace dst

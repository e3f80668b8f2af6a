// The values a training step takes and gives: a micro-batch of token ids and labels, the result
// of one optimizer step, and the summary of a run. Shared by the Trainer and the run components
// (train/step_metrics.h, train/training_data.h, ...).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "deepseek_train/privacy/privacy_options.h"

namespace dst {

struct TokenBatch;

// One micro-batch: int64 [rows, seq] input ids and labels (kIgnoreIndex = not counted).
struct MicroBatch {
  torch::Tensor input_ids;
  torch::Tensor labels;
};
MicroBatch to_micro_batch(const TokenBatch& batch);

struct StepResult {
  int64_t step = 0;        // 1-based index of the step just taken
  double loss = 0.0;       // mean token loss over every rank's micro-batches
  double grad_norm = 0.0;  // global norm before clipping
  double lr = 0.0;
  int64_t tokens = 0;  // target tokens of the step, all ranks
  double seconds = 0.0;
  uint64_t comm_bytes = 0;  // bytes this rank sent during the step
  double comm_wait_seconds = 0.0;
  std::map<std::string, uint64_t> comm_bytes_by_op;       // op name -> bytes, ops that moved data
  std::map<std::string, double> comm_wait_seconds_by_op;  // op name -> seconds blocked
  double loss_scale = 1.0;  // the loss scale this step's backward used (fp16; 1 otherwise)
  bool skipped = false;     // non-finite loss or gradients: no update was applied anywhere
  // When skipped: the first parameter (model order) whose gradient was non-finite, if any.
  std::string first_nonfinite_gradient;
  double pipeline_wait_seconds = 0.0;  // waiting on other pipeline stages (bubble + transfers)
  // Mixture of experts (0 without): the largest max/mean expert-load ratio over the MoE layers,
  // and the tokens no expert computed (always 0: no capacity limit).
  double expert_load_max_over_mean = 0.0;
  int64_t dropped_tokens = 0;
  // moe.aux_loss_alpha > 0: alpha x the sequence-wise balance loss (mean over the step's
  // sequences, summed over layers), which the optimised objective adds to `loss`.
  double balance_loss = 0.0;
  std::optional<PrivacyReport> privacy;  // under DP-SGD only
};

struct TrainSummary {
  int64_t steps = 0;
  double final_loss = 0.0;
  double initial_eval_loss = 0.0;
  double final_eval_loss = 0.0;
  double tokens_per_second = 0.0;
  std::string weights_path;
  double best_eval_loss = 0.0;  // lowest eval loss seen (the initial one if none was lower)
  int64_t best_step = 0;
  bool stopped_early = false;
};

}  // namespace dst

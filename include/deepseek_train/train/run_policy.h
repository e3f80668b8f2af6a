// The decisions a training run takes after each step, each from the recipe alone (so every rank
// decides the same): when to evaluate, whether the evaluation loss improved or the run should stop
// early (train.early_stopping), and which checkpoint to save (checkpoint.every_steps, keep_best,
// at_end). Torch-free.
#pragma once

#include <cstdint>

#include "deepseek_train/checkpoint/checkpoint_options.h"
#include "deepseek_train/train/train_config.h"

namespace dst {

// Evaluation every train.eval_every steps and after the last one.
bool evaluation_due(const TrainOptions& train, int64_t step);

// Tracks the best evaluation loss: an evaluation improves on it by more than min_delta, or counts
// towards `patience` evaluations without improvement (patience 0: never stops).
class EarlyStopping {
 public:
  EarlyStopping(const TrainOptions& train, double initial_loss);
  struct Verdict {
    bool new_best = false;
    bool stop = false;
  };
  Verdict observe(int64_t step, double eval_loss);
  double best_loss() const { return best_loss_; }
  int64_t best_step() const { return best_step_; }  // 0: the initial evaluation

 private:
  int64_t patience_;
  double min_delta_;
  double best_loss_;
  int64_t best_step_ = 0;
  int64_t without_improvement_ = 0;
};

// Which checkpoint a step saves.
enum class CheckpointSave {
  kNone,
  kRegular,  // every_steps, or at the end (last step or early stop) with at_end
  kBest,     // a new best evaluation with keep_best: saved, committed, then marked best
};
CheckpointSave checkpoint_due(const CheckpointOptions& options, int64_t step, bool run_ends,
                              bool new_best);

}  // namespace dst

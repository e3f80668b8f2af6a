#include "deepseek_train/train/run_policy.h"

namespace dst {

bool evaluation_due(const TrainOptions& train, int64_t step) {
  return step == train.steps || (train.eval_every > 0 && step % train.eval_every == 0);
}

EarlyStopping::EarlyStopping(const TrainOptions& train, double initial_loss)
    : patience_(train.early_stopping_patience),
      min_delta_(train.early_stopping_min_delta),
      best_loss_(initial_loss) {}

EarlyStopping::Verdict EarlyStopping::observe(int64_t step, double eval_loss) {
  Verdict verdict;
  if (eval_loss < best_loss_ - min_delta_) {
    best_loss_ = eval_loss;
    best_step_ = step;
    without_improvement_ = 0;
    verdict.new_best = true;
  } else if (++without_improvement_ >= patience_ && patience_ > 0) {
    verdict.stop = true;
  }
  return verdict;
}

CheckpointSave checkpoint_due(const CheckpointOptions& options, int64_t step, bool run_ends,
                              bool new_best) {
  if (new_best && options.keep_best) return CheckpointSave::kBest;
  const bool periodic = options.every_steps > 0 && step % options.every_steps == 0;
  if (periodic || (run_ends && options.at_end)) return CheckpointSave::kRegular;
  return CheckpointSave::kNone;
}

}  // namespace dst

#include "deepseek_train/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace dst {

double learning_rate_at(int64_t step, int64_t total_steps, double base_lr,
                        const ScheduleOptions& options) {
  const int64_t warmup = options.warmup_steps;
  if (step < warmup) return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - 1 - warmup);
  const double progress =
      std::clamp(static_cast<double>(step - warmup) / static_cast<double>(decay_steps), 0.0, 1.0);
  const double min_lr = options.min_lr;
  switch (options.type) {
    case LrScheduleType::kConstant:
      return base_lr;
    case LrScheduleType::kLinear:
      return min_lr + (base_lr - min_lr) * (1.0 - progress);
    case LrScheduleType::kCosine:
      return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  return base_lr;
}

}  // namespace dst

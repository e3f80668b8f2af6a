// Learning-rate schedules: linear warmup over `warmup_steps`, then constant, linear decay or cosine
// decay to min_lr at the last step.
#pragma once

#include <cstdint>

#include "deepseek_train/optim/optim_options.h"

namespace dst {

// Learning rate for the optimizer step with 0-based index `step` of `total_steps`:
//   step < warmup:  base_lr * (step + 1) / warmup
//   after warmup:   progress p = (step - warmup) / max(1, total_steps - 1 - warmup) in [0, 1];
//                   constant: base_lr; linear: min + (base - min)(1 - p);
//                   cosine: min + (base - min)(1 + cos(pi p)) / 2.
double learning_rate_at(int64_t step, int64_t total_steps, double base_lr,
                        const ScheduleOptions& options);

}  // namespace dst

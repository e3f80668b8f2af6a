// Optimizer and learning-rate schedule options (torch-free, filled by the recipe module).
#pragma once

#include <cstdint>
#include <string>

namespace dst {

struct AdamWOptions {
  double lr = 3e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // max global grad norm; <= 0 disables clipping
  // "none": update with ATen ops where the parameters live; "cpu": fp32 master weights and moments
  // in host memory, updated by the vectorised Eigen kernel (optim/cpu_adamw.h). With CPU
  // parameters both run on the host and "cpu" is a second implementation of the same update.
  std::string offload = "none";
  // With offload "none": contiguous fp32 CPU tensors are updated by the same one-pass kernel
  // (identical roundings, ~3x fewer passes over memory); false forces the ATen tensor ops.
  bool fused = true;
};

enum class LrScheduleType { kConstant, kLinear, kCosine };

struct ScheduleOptions {
  LrScheduleType type = LrScheduleType::kCosine;
  int64_t warmup_steps = 0;
  double min_lr = 0.0;
};

// "constant" | "linear" | "cosine"; throws ConfigError otherwise.
LrScheduleType parse_lr_schedule_type(const std::string& name);
std::string to_string(LrScheduleType type);

}  // namespace dst

// AdamW update kernel for a CPU-offloaded optimizer: fp32 master weights and both moments live in
// host memory as flat arrays and are updated by a vectorised (Eigen) loop. The arithmetic is that
// of torch.optim.AdamW (non-fused, non-amsgrad) on float tensors, i.e. of dst::AdamW::step, so a
// parameter updated here follows the same trajectory as one updated on the device. Torch-free.
#pragma once

#include <cstdint>

namespace dst {

// Hyper-parameters of one AdamW step (t is the 1-based step count after this update, t >= 1).
struct AdamWStep {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  int64_t t;
};

// Updates n elements in place: param (fp32 master weights), exp_avg, exp_avg_sq, from grad:
//   if decay: p *= 1 - lr * weight_decay
//   m = lerp(m, g, 1 - beta1);  v = v * beta2 + (1 - beta2) * g * g
//   p += -(lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The per-step scalars are computed in double and applied as float, as ATen does for float
// tensors. decay=false skips weight decay (norms, biases). Arrays must not overlap. n == 0 is a
// no-op (the pointers may then be null). Vectorised with Eigen; large arrays are processed in
// chunks of 64 Ki elements (cache-friendly), in parallel with OpenMP if it is enabled.
// Throws dst::InternalError if n < 0 or step.t < 1.
void cpu_adamw_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                      const AdamWStep& step, bool decay);

}  // namespace dst

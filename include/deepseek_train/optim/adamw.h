// AdamW with decoupled weight decay and bias correction, the same arithmetic as torch.optim.AdamW
// (non-fused, non-amsgrad), over a list of named parameters. Parameters whose names say they are
// norms or biases take no weight decay.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/optim/optim_options.h"

namespace dst {

struct NamedParameter {
  NamedParameter(std::string name_, at::Tensor tensor_, bool decay_ = true, at::Tensor master_ = {})
      : name(std::move(name_)),
        tensor(std::move(tensor_)),
        decay(decay_),
        master(std::move(master_)) {}

  std::string name;
  at::Tensor tensor;  // updated in place from tensor.grad()
  bool decay = true;
  // Optional fp32 master copy (for bf16/fp16 parameters): the update is applied to it, with the
  // gradient widened to fp32, and the result rounded into `tensor`.
  at::Tensor master;
};

// One AdamW update of `param` in place from `grad` and the moments, for the 1-based step `t`.
// Shared by AdamW and the sharded (ZeRO) optimizer so both do identical arithmetic.
void adamw_update(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& exp_avg,
                  const at::Tensor& exp_avg_sq, double lr, int64_t t, bool decay,
                  const AdamWOptions& options);

class AdamW {
 public:
  AdamW(std::vector<NamedParameter> parameters, const AdamWOptions& options);

  // One update with learning rate `lr` from the gradients times grad_multiplier (unscaling and
  // clipping; applied in fp32 after widening for parameters with a master copy). Parameters
  // without a gradient are skipped.
  void step(double lr, double grad_multiplier = 1.0);

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t steps) { step_ = steps; }
  const std::vector<NamedParameter>& parameters() const { return parameters_; }
  const std::vector<at::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<at::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }

 private:
  std::vector<NamedParameter> parameters_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
};

}  // namespace dst

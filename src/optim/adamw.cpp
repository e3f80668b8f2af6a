#include "deepseek_train/optim/adamw.h"

#include <ATen/ATen.h>

#include <cmath>

#include "deepseek_train/core/error.h"
#include "deepseek_train/optim/cpu_adamw.h"

namespace dst {

AdamW::AdamW(std::vector<NamedParameter> parameters, const AdamWOptions& options)
    : parameters_(std::move(parameters)), options_(options) {
  for (const NamedParameter& p : parameters_) {
    DST_CHECK(p.tensor.defined(), ConfigError,
              "optimizer parameter '" << p.name << "' is undefined");
    const at::Tensor& state_like = p.master.defined() ? p.master : p.tensor;
    exp_avg_.push_back(at::zeros_like(state_like, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(state_like, at::MemoryFormat::Contiguous));
  }
}

void adamw_update(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& exp_avg,
                  const at::Tensor& exp_avg_sq, double lr, int64_t t, bool decay,
                  const AdamWOptions& options) {
  at::NoGradGuard no_grad;
  const auto host_fp32 = [](const at::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
  };
  const bool all_host_fp32 =
      host_fp32(param) && host_fp32(grad) && host_fp32(exp_avg) && host_fp32(exp_avg_sq);
  if (options.offload == "cpu") {
    for (const at::Tensor* tensor : {&param, &grad, &exp_avg, &exp_avg_sq}) {
      DST_CHECK(host_fp32(*tensor), ConfigError,
                "optim.offload=cpu needs contiguous fp32 host tensors (parameters on a GPU: "
                "ZeRO stages 1-3 keep their master weights and moments on the host; stage 0 "
                "does not), got "
                    << tensor->scalar_type() << " on " << tensor->device());
    }
  }
  // The one-pass kernel: always when offloaded, by default (optim.fused) for fp32 host tensors.
  if (options.offload == "cpu" || (options.fused && all_host_fp32)) {
    cpu_adamw_update(
        param.data_ptr<float>(), grad.data_ptr<float>(), exp_avg.data_ptr<float>(),
        exp_avg_sq.data_ptr<float>(), param.numel(),
        AdamWStep{lr, options.beta1, options.beta2, options.eps, options.weight_decay, t}, decay);
    return;
  }
  // CUDA: ATen's fused AdamW kernel (one launch per tensor; ZeRO's tensors are whole shards).
  if (options.fused && param.is_cuda() && param.scalar_type() == at::kFloat &&
      grad.scalar_type() == at::kFloat) {
    const at::Tensor step = at::full({}, static_cast<double>(t), param.options());
    at::_fused_adamw_({param}, {grad}, {exp_avg}, {exp_avg_sq}, {}, {step}, lr, options.beta1,
                      options.beta2, decay ? options.weight_decay : 0.0, options.eps,
                      /*amsgrad=*/false, /*maximize=*/false);
    return;
  }
  const double bias_correction1 = 1.0 - std::pow(options.beta1, static_cast<double>(t));
  const double bias_correction2 = 1.0 - std::pow(options.beta2, static_cast<double>(t));
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  if (decay && options.weight_decay != 0.0) param.mul_(1.0 - lr * options.weight_decay);
  exp_avg.lerp_(grad, 1.0 - options.beta1);
  exp_avg_sq.mul_(options.beta2).addcmul_(grad, grad, 1.0 - options.beta2);
  at::Tensor denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(options.eps);
  param.addcdiv_(exp_avg, denom, -step_size);
}

void AdamW::step(double lr, double grad_multiplier) {
  ++step_;
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const NamedParameter& p = parameters_[i];
    const at::Tensor& grad = p.tensor.grad();
    if (!grad.defined()) continue;
    if (p.master.defined()) {
      at::Tensor wide = grad.to(p.master.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
      if (grad_multiplier != 1.0) wide.mul_(grad_multiplier);
      adamw_update(p.master, wide, exp_avg_[i], exp_avg_sq_[i], lr, step_, p.decay, options_);
      p.tensor.copy_(p.master);
    } else {
      if (grad_multiplier != 1.0) grad.mul_(grad_multiplier);
      adamw_update(p.tensor, grad, exp_avg_[i], exp_avg_sq_[i], lr, step_, p.decay, options_);
    }
  }
}

}  // namespace dst

#include "model_ops.h"

#include <torch/nn/functional/linear.h>

#include "deepseek_train/kernels/fused_ops.h"
#include "deepseek_train/privacy/per_example_tap.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"
#include "deepseek_train/tensor_parallel/parallel_layers.h"

namespace dst::model_ops {

namespace F = torch::nn::functional;

namespace {
int group_size(const comm::CommunicatorPtr& group) { return group ? group->size() : 1; }
}  // namespace

torch::Tensor enter_tp(const torch::Tensor& x, const comm::CommunicatorPtr& group) {
  return group_size(group) > 1 ? copy_to_tp_region(x, *group) : x;
}

torch::Tensor leave_tp(const torch::Tensor& x, const comm::CommunicatorPtr& group) {
  return group_size(group) > 1 ? reduce_from_tp_region(x, *group) : x;
}

bool fusable(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() &&
         (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16);
}

torch::Tensor project(const torch::Tensor& weight, const torch::Tensor& x, bool fused) {
  torch::Tensor out = fused && fused_linear_applies(x, weight)
                          ? fused_linear(x, weight)
                          : F::linear(x, weight.to(x.scalar_type()));
  if (PerExampleGradientTap* tap = active_per_example_tap()) tap->linear(weight, x, out);
  return out;
}

torch::Tensor project(const torch::nn::Linear& linear, const torch::Tensor& x,
                      const std::map<std::string, std::shared_ptr<LinearAdapter>>& adapters,
                      const char* name, bool fused) {
  torch::Tensor out = project(linear->weight, x, fused);
  if (adapters.empty()) return out;
  auto found = adapters.find(name);
  return found == adapters.end() || !found->second ? out : found->second->forward(x, out);
}

torch::nn::Linear column_parallel(int64_t in, int64_t out, const comm::CommunicatorPtr& tp,
                                  const char* what) {
  return torch::nn::Linear(std::shared_ptr<torch::nn::LinearImpl>(
      std::make_shared<ColumnParallelLinearImpl>(in, out, tp, what)));
}

torch::nn::Linear row_parallel(int64_t in, int64_t out, const comm::CommunicatorPtr& tp,
                               const char* what) {
  return torch::nn::Linear(std::shared_ptr<torch::nn::LinearImpl>(
      std::make_shared<RowParallelLinearImpl>(in, out, tp, what)));
}

torch::nn::Linear replicated(int64_t in, int64_t out) {
  return torch::nn::Linear(
      std::shared_ptr<torch::nn::LinearImpl>(std::make_shared<ReplicatedLinearImpl>(in, out)));
}

ProjectionSite projection_site(const CausalLM& model, const std::string& module_name,
                               torch::nn::Linear& linear,
                               std::map<std::string, std::shared_ptr<LinearAdapter>>& slots,
                               const std::string& slot) {
  const int tp = model.tp_size();
  ProjectionSite site;
  site.name = module_name;
  site.linear = linear;
  site.split = model.tp_split(module_name + ".weight");
  site.in_features = linear->weight.size(1) * (site.split == TpSplit::kDim1 ? tp : 1);
  site.out_features = linear->weight.size(0) * (site.split == TpSplit::kDim0 ? tp : 1);
  site.adapter = &slots[slot];
  return site;
}

}  // namespace dst::model_ops

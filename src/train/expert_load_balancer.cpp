#include "deepseek_train/train/expert_load_balancer.h"

#include <torch/torch.h>

#include <vector>

namespace dst {

namespace {

// Sums every layer's loads over the group in one fp64 all-reduce: [layers, experts].
torch::Tensor summed_loads(const std::map<int64_t, torch::Tensor>& loads,
                           comm::Communicator& group) {
  std::vector<torch::Tensor> rows;
  for (const auto& [layer, load] : loads) rows.push_back(load.to(torch::kFloat64));
  torch::Tensor all = torch::stack(rows).contiguous();
  if (group.size() > 1) group.all_reduce(all, comm::ReduceOp::kSum)->wait();
  return all;
}

}  // namespace

ExpertLoadStatistics ExpertLoadBalancer::after_step(CausalLM& model,
                                                    comm::Communicator& data_parallel,
                                                    comm::Communicator* pipeline,
                                                    bool update_bias) const {
  ExpertLoadStatistics statistics;
  if (!model.config().has_moe()) return statistics;
  const std::map<int64_t, torch::Tensor> loads = model.take_expert_loads();
  double worst = 0.0;
  if (!loads.empty()) {
    const torch::Tensor all = summed_loads(loads, data_parallel);
    const torch::Tensor mean = all.mean(1, /*keepdim=*/true);
    worst = (std::get<0>(all.max(1)) / mean.squeeze(1).clamp_min(1e-12)).max().item<double>();
    if (rate_ > 0 && update_bias) {
      const torch::Tensor step = torch::sign(mean - all) * rate_;
      const torch::Tensor centred = (step - step.mean(1, /*keepdim=*/true)).to(torch::kFloat32);
      int64_t row = 0;
      for (const auto& [layer, load] : loads) model.add_to_routing_bias(layer, centred[row++]);
    }
  }
  if (pipeline && pipeline->size() > 1) {
    torch::Tensor value = torch::tensor({worst}, torch::kFloat64);
    pipeline->all_reduce(value, comm::ReduceOp::kMax)->wait();
    worst = value.item<double>();
  }
  statistics.max_over_mean = worst;
  return statistics;
}

}  // namespace dst

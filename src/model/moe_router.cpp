#include "deepseek_train/model/moe_router.h"

#include <torch/torch.h>

#include <limits>

namespace dst {

namespace {

// Keeps the experts of the `topk_group` groups with the best `group_scores` [tokens, n_group]:
// the others' scores become `masked`.
torch::Tensor keep_best_groups(const torch::Tensor& scores, const torch::Tensor& group_scores,
                               const ModelConfig& c, double masked) {
  const int64_t tokens = scores.size(0), per_group = c.n_routed_experts / c.n_group;
  const torch::Tensor chosen = std::get<1>(group_scores.topk(c.topk_group, -1));
  const torch::Tensor group_mask =
      torch::zeros_like(group_scores, torch::kBool).scatter_(1, chosen, true);
  const torch::Tensor expert_mask =
      group_mask.unsqueeze(-1).expand({tokens, c.n_group, per_group}).reshape({tokens, -1});
  return scores.masked_fill(expert_mask.logical_not(), masked);
}

TokenRouting route_v2(const torch::Tensor& logits, const ModelConfig& c) {
  const torch::Tensor scores = logits.softmax(-1);
  torch::Tensor choice_scores = scores;
  if (c.topk_method == "group_limited_greedy") {
    const torch::Tensor group_scores =
        std::get<0>(scores.detach().view({scores.size(0), c.n_group, -1}).max(-1));
    choice_scores = keep_best_groups(scores, group_scores, c, 0.0);
  }
  auto [weights, experts] = choice_scores.topk(c.num_experts_per_tok, -1);
  return {experts, weights * c.routed_scaling_factor};
}

TokenRouting route_v3(const torch::Tensor& logits, const torch::Tensor& bias,
                      const ModelConfig& c) {
  const torch::Tensor scores = logits.sigmoid();
  torch::Tensor experts;
  {
    torch::NoGradGuard choice_only;  // the bias and the choice carry no gradient
    const torch::Tensor biased = scores.detach() + bias.to(torch::kFloat32);
    const torch::Tensor group_scores =
        std::get<0>(biased.view({biased.size(0), c.n_group, -1}).topk(2, -1)).sum(-1);
    const torch::Tensor candidates =
        keep_best_groups(biased, group_scores, c, -std::numeric_limits<double>::infinity());
    experts = std::get<1>(candidates.topk(c.num_experts_per_tok, -1));
  }
  torch::Tensor weights = scores.gather(1, experts);
  if (c.norm_topk_prob) weights = weights / (weights.sum(-1, /*keepdim=*/true) + 1e-20);
  return {experts, weights * c.routed_scaling_factor};
}

}  // namespace

TokenRouting route_tokens(const torch::Tensor& logits, const torch::Tensor& score_bias,
                          const ModelConfig& config) {
  const torch::Tensor fp32 = logits.to(torch::kFloat32);
  if (config.model_type == "deepseek_v3") return route_v3(fp32, score_bias, config);
  return route_v2(fp32, config);
}

torch::Tensor sequence_balance_loss(const torch::Tensor& logits, const torch::Tensor& experts,
                                    int64_t sequences, const ModelConfig& config) {
  const int64_t n = config.n_routed_experts, k = experts.size(1);
  const int64_t length = logits.size(0) / sequences;
  const torch::Tensor fp32 = logits.to(torch::kFloat32);
  torch::Tensor scores;
  if (config.model_type == "deepseek_v3") {
    scores = fp32.sigmoid();
    scores = scores / scores.sum(-1, /*keepdim=*/true);
  } else {
    scores = fp32.softmax(-1);
  }
  const torch::Tensor mean_scores = scores.view({sequences, length, n}).mean(1);
  torch::Tensor pairs = torch::zeros({sequences, n}, fp32.options());
  pairs.scatter_add_(1, experts.reshape({sequences, length * k}),
                     torch::ones({sequences, length * k}, fp32.options()));
  const torch::Tensor fraction = pairs * (static_cast<double>(n) / static_cast<double>(length * k));
  return (fraction * mean_scores).sum(1);
}

}  // namespace dst

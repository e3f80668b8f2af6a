// DeepSeekMoE token routing with Hugging Face's semantics (transformers' DeepseekV2TopkRouter and
// DeepseekV3TopkRouter), as a function of the router logits so it can be tested alone:
//   V2: softmax scores; `greedy` top-k, or `group_limited_greedy` (groups scored by their best
//       expert, experts outside the topk_group best groups masked with 0); weights are the chosen
//       scores times routed_scaling_factor (never renormalised, as in transformers).
//   V3: sigmoid scores; the correction bias is added for the choice only; groups scored by the
//       sum of their two best biased scores, experts outside the topk_group best groups masked
//       with -inf; weights are the chosen unbiased scores, divided by their sum when
//       norm_topk_prob, times routed_scaling_factor.
// Gradients reach the logits through the chosen weights only.
#pragma once

#include <torch/types.h>

#include "deepseek_train/model/model_config.h"

namespace dst {

struct TokenRouting {
  torch::Tensor experts;  // int64 [tokens, num_experts_per_tok]
  torch::Tensor weights;  // fp32 [tokens, num_experts_per_tok]
};

// logits: fp32 [tokens, n_routed_experts]; score_bias: fp32 [n_routed_experts] (V3's
// e_score_correction_bias; undefined or ignored for V2).
TokenRouting route_tokens(const torch::Tensor& logits, const torch::Tensor& score_bias,
                          const ModelConfig& config);

// DeepSeek's sequence-wise balance loss of one MoE layer (the DeepSeek-V3 report's complementary
// sequence-wise auxiliary loss; DeepSeek-V2's expert-level loss per sequence, as DeepSeek's own
// modeling code computes it with seq_aux): for each sequence of T tokens,
//   sum over experts i of f_i * P_i,  f_i = E / (K T) * (the sequence's pairs routed to i),
//   P_i = mean over its tokens of the token's score for i
// with E routed experts, K per token, and scores normalised per token (V3: sigmoid scores divided
// by their sum; V2: softmax). logits fp32 [sequences * T, E] (sequence-major), experts the routing
// choice [sequences * T, K]. Returns fp32 [sequences]; gradients reach the logits through P.
torch::Tensor sequence_balance_loss(const torch::Tensor& logits, const torch::Tensor& experts,
                                    int64_t sequences, const ModelConfig& config);

}  // namespace dst

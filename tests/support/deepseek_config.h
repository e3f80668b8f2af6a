// Test support: the DeepSeek-V3 shape the model, equivalence and expert-parallel tests share —
// MLA with q_lora (24/16, head dims 8/8/12), 8 routed experts of 16 in 4 groups, 2 groups and 2
// experts per token, 1 shared, layer 0 dense, sigmoid noaux_tc routing scaled by 2.5.
#pragma once

#include "deepseek_train/model/model_config.h"

namespace dst::testing {

// `base` (vocabulary, hidden size, layers, heads, ...) made a tiny DeepSeek-V3.
inline ModelConfig tiny_deepseek_v3(ModelConfig base) {
  ModelConfig& m = base;
  m.model_type = "deepseek_v3";
  m.num_key_value_heads = m.num_attention_heads;
  m.q_lora_rank = 24;
  m.kv_lora_rank = 16;
  m.qk_nope_head_dim = 8;
  m.qk_rope_head_dim = 8;
  m.v_head_dim = 12;
  m.moe_intermediate_size = 16;
  m.n_routed_experts = 8;
  m.n_shared_experts = 1;
  m.num_experts_per_tok = 2;
  m.first_k_dense_replace = 1;
  m.n_group = 4;
  m.topk_group = 2;
  m.topk_method = "noaux_tc";
  m.scoring_func = "sigmoid";
  m.norm_topk_prob = true;
  m.routed_scaling_factor = 2.5;
  return base;
}

}  // namespace dst::testing

// Rotary frequencies and attention scales of DeepSeek-V2/V3 (Multi-head Latent Attention), with
// Hugging Face's semantics: the default rotary embedding or YaRN (rope_scaling: factor, beta_fast,
// beta_slow, mscale, mscale_all_dim, original_max_position_embeddings, truncate). Torch-free.
//
// YaRN blends each frequency between theta^(-2i/d) (extrapolated) and that divided by `factor`
// (interpolated) along a linear ramp between two correction dimensions; it scales cos/sin by an
// attention factor (1 when mscale == mscale_all_dim, as in every released DeepSeek config) and
// MLA's softmax scale by yarn_mscale(factor, mscale_all_dim)^2.
#pragma once

#include <vector>

#include "deepseek_train/model/model_config.h"

namespace dst {

// inv_freq[i] for i < qk_rope_head_dim / 2 (float values, as Hugging Face computes them).
std::vector<float> rotary_inverse_frequencies(const ModelConfig& config);
// The factor cos and sin are multiplied by (1 for the default rotary embedding).
double rotary_attention_factor(const ModelConfig& config);
// 0.1 * mscale * ln(factor) + 1 for factor > 1, else 1.
double yarn_mscale(double factor, double mscale);
// qk_head_dim^-0.5, times yarn_mscale(factor, mscale_all_dim)^2 under YaRN with mscale_all_dim.
double mla_softmax_scale(const ModelConfig& config);

}  // namespace dst

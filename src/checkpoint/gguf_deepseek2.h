// DeepSeek-V2/V3 as llama.cpp's `deepseek2` architecture (private to the GGUF export,
// checkpoint/gguf_export.h): its metadata keys and its tensors under llama.cpp's names, in the
// layout its loader checks (docs/design/deepseek2_gguf.md has the conventions and where they
// come from): kv_b_proj split per head into attn_k_b (transposed) and attn_v_b, routed experts
// stacked into 3-D ffn_*_exps tensors, the router's correction bias as exp_probs_b.bias, rope
// rows reordered to adjacent pairs when the config rotates half-split, and YaRN's attention
// factor folded into the rope rows when mscale differs from mscale_all_dim.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "deepseek_train/checkpoint/gguf_writer.h"
#include "deepseek_train/model/model_config.h"

namespace dst::gguf_deepseek2 {

struct GgufTensor {
  std::string name;  // llama.cpp's ("blk.3.attn_k_b.weight")
  at::Tensor values;
  bool keep_f32 = false;  // stored f32 whatever the requested dtype (norms, router, bias)
};

// ConfigError naming the key when llama.cpp's deepseek2 cannot hold the model (a plain q_proj
// only with 27 layers and q_lora_rank only otherwise; YaRN beta_fast/beta_slow other than 32/1).
void check_representable(const ModelConfig& config);
void add_metadata(GgufWriter& gguf, const ModelConfig& config);
// Every tensor llama.cpp loads, from the model's full tensors (Hugging Face names); layers past
// num_hidden_layers (multi-token prediction) are left out. ConfigError naming a tensor with no
// llama.cpp name or a missing expert.
std::vector<GgufTensor> tensors(const ModelConfig& config,
                                const std::map<std::string, at::Tensor>& model);

}  // namespace dst::gguf_deepseek2

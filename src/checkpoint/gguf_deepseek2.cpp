#include "gguf_deepseek2.h"

#include <ATen/ATen.h>

#include <regex>

#include "deepseek_train/core/error.h"
#include "deepseek_train/model/rope_scaling.h"

namespace dst::gguf_deepseek2 {

namespace {

constexpr const char* kArch = "deepseek2";
constexpr int64_t kLiteLayers = 27;  // llama.cpp tells V2-Lite (plain q_proj) by its layer count

std::string key(const char* name) { return std::string(kArch) + "." + name; }

// llama.cpp's YaRN keys are written only for a factor above 1 (its mscale formula, unlike
// transformers', is not 1 below).
bool writes_yarn(const ModelConfig& c) {
  return c.rope_scaling.rope_type == "yarn" && c.rope_scaling.factor > 1;
}

// The rope rows of a projection whose output is `groups` blocks of `block` rows each ending in
// qk_rope_head_dim rope rows: reordered from half-split to adjacent pairs when the model
// rotates half-split (V3 with rope_interleave false), and scaled by YaRN's attention factor
// (llama.cpp keeps cos/sin at magnitude 1).
at::Tensor adapt_rope_rows(const ModelConfig& c, at::Tensor weight, int64_t groups, int64_t block) {
  const int64_t rope = c.qk_rope_head_dim;
  const bool half_split = c.model_type == "deepseek_v3" && !c.rope_interleave;
  const double factor = rotary_attention_factor(c);
  if (!half_split && factor == 1.0) return weight;
  at::Tensor blocks = weight.reshape({groups, block, weight.size(-1)}).clone();
  at::Tensor rows = blocks.narrow(1, block - rope, rope);
  if (half_split)  // new[2i] = old[i], new[2i + 1] = old[i + rope/2]
    rows.copy_(rows.reshape({groups, 2, rope / 2, weight.size(-1)})
                   .transpose(1, 2)
                   .reshape({groups, rope, weight.size(-1)}));
  rows.mul_(factor);
  return blocks.reshape(weight.sizes());
}

const at::Tensor& need(const std::map<std::string, at::Tensor>& model, const std::string& name) {
  auto it = model.find(name);
  DST_CHECK(it != model.end(), ConfigError,
            "GGUF export: the model has no tensor '" << name << "'");
  return it->second;
}

// Per layer: Hugging Face suffix -> llama.cpp name, for tensors copied as they are.
const std::map<std::string, std::string>& plain_names() {
  static const std::map<std::string, std::string> names = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
      {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
      {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
      {"mlp.gate.weight", "ffn_gate_inp.weight"},
      {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},
      {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
      {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
      {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"}};
  return names;
}

// The tensors of layer `layer` that need more than a new name.
void add_transformed(const ModelConfig& c, const std::map<std::string, at::Tensor>& model,
                     int64_t layer, std::vector<GgufTensor>& out) {
  const std::string hf = "model.layers." + std::to_string(layer) + ".";
  const std::string blk = "blk." + std::to_string(layer) + ".";
  const int64_t heads = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim;
  const int64_t latent = c.kv_lora_rank;
  const std::string q = c.q_lora_rank > 0 ? "q_b_proj" : "q_proj";
  out.push_back(
      {blk + (c.q_lora_rank > 0 ? "attn_q_b.weight" : "attn_q.weight"),
       adapt_rope_rows(c, need(model, hf + "self_attn." + q + ".weight"), heads, c.qk_head_dim())});
  out.push_back({blk + "attn_kv_a_mqa.weight",
                 adapt_rope_rows(c, need(model, hf + "self_attn.kv_a_proj_with_mqa.weight"), 1,
                                 latent + c.qk_rope_head_dim)});
  // kv_b_proj [heads * (nope + v), latent] -> k_b [heads, latent, nope], v_b [heads, v, latent].
  const at::Tensor kv_b =
      need(model, hf + "self_attn.kv_b_proj.weight").reshape({heads, nope + v, latent});
  out.push_back({blk + "attn_k_b.weight", kv_b.narrow(1, 0, nope).transpose(1, 2).contiguous()});
  out.push_back({blk + "attn_v_b.weight", kv_b.narrow(1, nope, v).contiguous()});
  if (!c.is_moe_layer(layer)) return;
  for (const char* projection : {"gate", "up", "down"}) {
    std::vector<at::Tensor> experts;
    for (int64_t e = 0; e < c.n_routed_experts; ++e)
      experts.push_back(
          need(model, hf + "mlp.experts." + std::to_string(e) + "." + projection + "_proj.weight"));
    out.push_back({blk + "ffn_" + projection + "_exps.weight", at::stack(experts)});
  }
}

}  // namespace

void check_representable(const ModelConfig& c) {
  DST_CHECK(c.n_shared_experts >= 1, ConfigError,
            "GGUF export: model.n_shared_experts must be at least 1 for llama.cpp's deepseek2 "
            "(its loader requires the shared-expert tensors), got "
                << c.n_shared_experts);
  DST_CHECK((c.q_lora_rank == 0) == (c.num_hidden_layers == kLiteLayers), ConfigError,
            "GGUF export: llama.cpp's deepseek2 takes a plain q_proj (model.q_lora_rank null) "
            "exactly when the model has 27 layers (DeepSeek-V2-Lite); this one has "
                << c.num_hidden_layers << " layers and q_lora_rank " << c.q_lora_rank);
  DST_CHECK(!writes_yarn(c) || (c.rope_scaling.beta_fast == 32 && c.rope_scaling.beta_slow == 1),
            ConfigError,
            "GGUF export: model.rope_scaling.beta_fast/beta_slow must be 32/1 for llama.cpp "
            "(GGUF has no key for them), got "
                << c.rope_scaling.beta_fast << "/" << c.rope_scaling.beta_slow);
}

void add_metadata(GgufWriter& gguf, const ModelConfig& c) {
  const auto u32 = [&](const char* name, int64_t value) {
    gguf.add_uint32(key(name), static_cast<uint32_t>(value));
  };
  const auto f32 = [&](const char* name, double value) {
    gguf.add_float32(key(name), static_cast<float>(value));
  };
  const bool v3 = c.model_type == "deepseek_v3";
  u32("context_length", c.max_position_embeddings);
  u32("embedding_length", c.hidden_size);
  u32("block_count", c.num_hidden_layers);
  u32("feed_forward_length", c.intermediate_size);
  u32("attention.head_count", c.num_attention_heads);
  // MLA as llama.cpp runs it: one shared key/value head over the latent (+ rope) per token.
  u32("attention.head_count_kv", 1);
  u32("attention.key_length", c.kv_lora_rank + c.qk_rope_head_dim);
  u32("attention.value_length", c.kv_lora_rank);
  u32("attention.key_length_mla", c.qk_head_dim());
  u32("attention.value_length_mla", c.v_head_dim);
  f32("attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  f32("rope.freq_base", c.rope_theta);
  u32("rope.dimension_count", c.qk_rope_head_dim);
  if (c.q_lora_rank > 0) u32("attention.q_lora_rank", c.q_lora_rank);
  u32("attention.kv_lora_rank", c.kv_lora_rank);
  u32("leading_dense_block_count", c.first_k_dense_replace);
  u32("expert_count", c.n_routed_experts);
  u32("expert_used_count", c.num_experts_per_tok);
  u32("expert_shared_count", c.n_shared_experts);
  u32("expert_feed_forward_length", c.moe_intermediate_size);
  f32("expert_weights_scale", c.routed_scaling_factor);
  // transformers' V2 router never renormalises the chosen weights (norm_topk_prob is ignored).
  gguf.add_bool(key("expert_weights_norm"), v3 && c.norm_topk_prob);
  u32("expert_gating_func", v3 ? 2 : 1);  // llama.cpp: 1 softmax, 2 sigmoid
  if (v3 || c.topk_method == "group_limited_greedy") {
    // Read by llama.cpp builds since late 2025; older ones route without group limits.
    u32("expert_group_count", c.n_group);
    u32("expert_group_used_count", c.topk_group);
  }
  u32("vocab_size", c.vocab_size);
  if (writes_yarn(c)) {
    gguf.add_string(key("rope.scaling.type"), "yarn");
    f32("rope.scaling.factor", c.rope_scaling.factor);
    u32("rope.scaling.original_context_length",
        c.rope_scaling.original_max_position_embeddings > 0
            ? c.rope_scaling.original_max_position_embeddings
            : c.max_position_embeddings);
    f32("rope.scaling.yarn_log_multiplier", 0.1 * c.rope_scaling.mscale_all_dim);
  }
}

std::vector<GgufTensor> tensors(const ModelConfig& c,
                                const std::map<std::string, at::Tensor>& model) {
  std::vector<GgufTensor> out;
  out.push_back({"token_embd.weight", need(model, "model.embed_tokens.weight")});
  out.push_back({"output_norm.weight", need(model, "model.norm.weight"), true});
  // deepseek2 has no tied-embedding fallback: a tied head is written as a copy.
  out.push_back({"output.weight", need(model, c.tie_word_embeddings ? "model.embed_tokens.weight"
                                                                    : "lm_head.weight")});
  static const std::regex layer_name(R"(model\.layers\.(\d+)\.(.+))");
  static const std::regex transformed(
      R"(self_attn\.(q_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj)\.weight|mlp\.experts\.\d+\..*)");
  std::smatch match;
  for (const auto& [name, tensor] : model) {
    if (name.rfind("model.layers.", 0) != 0) {
      DST_CHECK(name == "model.embed_tokens.weight" || name == "model.norm.weight" ||
                    name == "lm_head.weight",
                ConfigError,
                "GGUF export: tensor '" << name
                                        << "' has no llama.cpp name (adapters must be "
                                           "merged first: training exports <output_dir>/merged)");
      continue;
    }
    DST_CHECK(std::regex_match(name, match, layer_name), ConfigError,
              "GGUF export: tensor '" << name << "' has no llama.cpp name");
    const int64_t layer = std::stoll(match[1].str());
    if (layer >= c.num_hidden_layers) continue;  // multi-token prediction: llama.cpp has none
    const std::string suffix = match[2].str();
    if (std::regex_match(suffix, transformed)) continue;
    auto found = plain_names().find(suffix);
    DST_CHECK(found != plain_names().end(), ConfigError,
              "GGUF export: tensor '" << name
                                      << "' has no llama.cpp name (adapters must be "
                                         "merged first: training exports <output_dir>/merged)");
    const bool keep_f32 = tensor.dim() < 2 || suffix == "mlp.gate.weight";
    out.push_back({"blk." + match[1].str() + "." + found->second, tensor, keep_f32});
  }
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer)
    add_transformed(c, model, layer, out);
  return out;
}

}  // namespace dst::gguf_deepseek2

// DeepSeek-V2 / V3 (and V2-Lite, R1): Multi-head Latent Attention (MLA) and DeepSeekMoE, with
// Hugging Face's semantics and checkpoint names (transformers' deepseek_v2 / deepseek_v3 are the
// reference; docs/design/deepseek_v2_v3_reference.md summarises them).
//
// MLA: queries from q_proj, or q_a_proj -> q_a_layernorm -> q_b_proj (q_lora_rank); keys and
// values from one compressed latent kv_a_proj_with_mqa(x) = [kv_lora_rank | qk_rope_head_dim]:
// the latent part is normalised (kv_a_layernorm) and expanded per head by kv_b_proj into
// [k_nope | v]; the rope part is one rotary key shared by every head. The key/value cache keeps
// the compressed pair (normalised latent, rotated rope key), not per-head keys and values.
//
// Tensor parallelism splits heads: q_proj / q_b_proj / kv_b_proj column-parallel, o_proj
// row-parallel; q_a_proj and kv_a_proj_with_mqa (and their norms) are computed whole on every tp
// rank, their outputs entering the tp region so their gradients are summed over it. MoE layers
// keep router and experts whole on every tp rank; shared experts and dense layers are the
// tensor-parallel SwiGLU MLP.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/model/decoder_lm.h"
#include "deepseek_train/model/expert_dispatch.h"
#include "deepseek_train/model/kv_cache.h"
#include "deepseek_train/model/llama.h"
#include "deepseek_train/model/model_config.h"

namespace dst {

class MlaAttentionImpl : public torch::nn::Module {
 public:
  MlaAttentionImpl(const ModelConfig& config, comm::CommunicatorPtr tp_group);
  torch::Tensor forward(const torch::Tensor& x);
  // Cache: key = normalised latent [batch, 1, length, kv_lora_rank], value = rotated rope key
  // [batch, 1, length, qk_rope_head_dim].
  torch::Tensor forward_cached(const torch::Tensor& x, LayerKeyValueCache& cache);

  // q_proj when q_lora_rank is 0, else q_a_proj, q_a_layernorm, q_b_proj.
  torch::nn::Linear q_proj{nullptr}, q_a_proj{nullptr}, q_b_proj{nullptr};
  RMSNorm q_a_layernorm{nullptr}, kv_a_layernorm{nullptr};
  torch::nn::Linear kv_a_proj_with_mqa{nullptr}, kv_b_proj{nullptr}, o_proj{nullptr};
  std::map<std::string, std::shared_ptr<LinearAdapter>> adapters;  // by projection name
  bool fused = true;  // fused CPU linear for fp32 projections

 private:
  torch::Tensor run(const torch::Tensor& input, LayerKeyValueCache& cache);
  // Rotates x [.., seq, qk_rope_head_dim] at positions first_position.. (V2 pairwise, V3
  // interleaved or half-split); per row after its left padding when `left_padding` is defined
  // (batched decoding, model/kv_cache.h).
  torch::Tensor rotate(const torch::Tensor& x, int64_t first_position,
                       const torch::Tensor& left_padding) const;
  torch::Tensor rotate_by(const torch::Tensor& x, const torch::Tensor& angles) const;
  torch::Tensor project(const torch::nn::Linear& linear, const torch::Tensor& x,
                        const char* name) const;

  comm::CommunicatorPtr tp_;
  ModelConfig config_;
  int64_t heads_;  // local to this tp rank
  torch::Tensor inv_freq_;
  double attention_factor_, softmax_scale_;
};
TORCH_MODULE(MlaAttention);

// The router: logits = x W^T in fp32 (W [n_routed_experts, hidden]); V3 also holds the
// e_score_correction_bias, a frozen parameter (zeros at initialisation) that only the
// load-balancing update changes.
class MoeGateImpl : public torch::nn::Module {
 public:
  explicit MoeGateImpl(const ModelConfig& config);
  torch::Tensor weight;
  torch::Tensor e_score_correction_bias;  // V3 only (undefined for V2)
};
TORCH_MODULE(MoeGate);

// One routed expert: down(silu(gate(x)) * up(x)), every projection whole.
class ExpertImpl : public torch::nn::Module {
 public:
  ExpertImpl(int64_t hidden, int64_t intermediate);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  bool fused = true;
};
TORCH_MODULE(Expert);

// DeepSeekMoE block: routed experts weighted by the router plus the shared experts. Under
// expert parallelism (ep_group of size > 1) the rank holds only its share of the routed experts
// and exchanges token copies with the others (model/expert_dispatch.h).
class MoeImpl : public torch::nn::Module {
 public:
  MoeImpl(const ModelConfig& config, comm::CommunicatorPtr tp_group,
          comm::CommunicatorPtr ep_group = nullptr);
  torch::Tensor forward(const torch::Tensor& x);
  MoeGate gate{nullptr};
  std::vector<Expert> experts;  // this rank's: "experts.<first_local_expert() + i>"
  int64_t first_local_expert() const;
  Mlp shared_experts{nullptr};  // null when n_shared_experts is 0
  // Tokens routed to each expert by forwards with gradients since the last take_expert_load
  // (int64 [n_routed_experts]).
  torch::Tensor take_expert_load();
  // Sequence-wise balance loss (moe_router.h): a forward with gradients adds `gradient_weight`
  // times the sum of its sequences' losses to the objective (its backward gets that weight as
  // the loss's gradient, whatever the rest of the loss), and accumulates the sum for
  // take_balance_loss. 0 (default): not computed.
  void set_balance_loss_weight(double gradient_weight) { balance_weight_ = gradient_weight; }
  double take_balance_loss();

 private:
  // x [tokens, hidden] -> sum over each token's experts of weight * expert(x), the tokens
  // grouped by expert so each expert runs one GEMM over its contiguous group.
  torch::Tensor run_experts(const torch::Tensor& x, const torch::Tensor& experts,
                            const torch::Tensor& weights);
  // This rank's experts over rows grouped by local expert (rows_per_expert[i] for experts[i]).
  torch::Tensor run_local_experts(const torch::Tensor& rows,
                                  const std::vector<int64_t>& rows_per_expert);
  ModelConfig config_;
  torch::Tensor load_;
  double balance_weight_ = 0.0, balance_sum_ = 0.0;
  std::shared_ptr<ExpertDispatcher> dispatcher_;  // null without expert parallelism
};
TORCH_MODULE(Moe);

class DeepseekDecoderLayerImpl : public DecoderBlock {
 public:
  DeepseekDecoderLayerImpl(const ModelConfig& config, int64_t index, comm::CommunicatorPtr tp_group,
                           comm::CommunicatorPtr ep_group, bool fused);
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor forward_cached(const torch::Tensor& x, LayerKeyValueCache& cache) override;
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  MlaAttention self_attn{nullptr};
  Mlp dense_mlp{nullptr};  // "mlp" of the first first_k_dense_replace layers
  Moe moe{nullptr};        // "mlp" of the others

 private:
  torch::Tensor feed_forward(const torch::Tensor& x);
};
TORCH_MODULE(DeepseekDecoderLayer);

// The deepseek_v2 / deepseek_v3 families' CausalLM.
class DeepseekModelImpl : public DecoderLMImpl {
 public:
  explicit DeepseekModelImpl(const ModelConfig& config, ModelShardSpec shard = {});
  // Attention projections, dense MLPs and shared experts (not the routed experts), in layer
  // order, for LoRA.
  std::vector<ProjectionSite> projection_sites() override;
  // The correction bias starts at zero; everything else as CausalLM initialises it.
  void initialize_parameter(const std::string& name, torch::Tensor& parameter,
                            uint64_t seed) override;
  // Forward: o_proj's output and the dense MLP's or shared experts' output. Backward: the
  // gradients of q_proj's input (or of the q latent), of the kv latent, of the rope key, and of
  // the dense MLP's or shared experts' input. Routed experts are whole on every tp rank.
  TpLayerTraffic tp_layer_traffic(int64_t layer) const override;
  std::map<int64_t, torch::Tensor> take_expert_loads() override;
  bool keeps_fp32(const std::string& name) const override;
  // MLA's and the MoE's activations per layer (the dense decoder's estimate misses the latent,
  // the per-head expansion, the routed copies and the experts' intermediates).
  int64_t activation_bytes(int64_t rows, int64_t seq_len, Precision compute, int64_t layers,
                           bool with_logits, int64_t checkpointed_layers) const override;
  // V3's e_score_correction_bias (ConfigError for V2, whose router has none).
  void add_to_routing_bias(int64_t layer, const torch::Tensor& delta) override;
  void set_balance_loss_weight(double gradient_weight) override;
  double take_balance_loss() override;
  // "model.layers.<i>.mlp.experts.<e>.*"; ep rank r holds experts [r * E/ep, (r + 1) * E/ep).
  bool is_routed_expert(const std::string& name) const override;
  std::string routed_expert_name_on(const std::string& name, int ep_rank) const override;
  std::map<int64_t, DeepseekDecoderLayer> layers;  // "model.layers.<i>", global index i

 private:
  int64_t local_experts_;  // routed experts per ep rank
};
TORCH_MODULE(DeepseekModel);

}  // namespace dst

#include "deepseek_train/model/deepseek.h"

#include <torch/torch.h>

#include <algorithm>
#include <limits>

#include "deepseek_train/core/deferred_tensor.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/model/moe_router.h"
#include "deepseek_train/model/rope_scaling.h"
#include "deepseek_train/tensor_parallel/parallel_layers.h"
#include "model_ops.h"

namespace dst {

namespace F = torch::nn::functional;
using model_ops::column_parallel;
using model_ops::enter_tp;
using model_ops::leave_tp;
using model_ops::replicated;
using model_ops::row_parallel;

namespace {

// transformers builds q_a_layernorm and kv_a_layernorm with RMSNorm's default epsilon, whatever
// the config's rms_norm_eps.
constexpr double kLatentNormEps = 1e-6;

}  // namespace

MlaAttentionImpl::MlaAttentionImpl(const ModelConfig& c, comm::CommunicatorPtr tp_group)
    : tp_(std::move(tp_group)),
      config_(c),
      heads_(tp_local_count(c.num_attention_heads, tp_, "num_attention_heads")),
      attention_factor_(rotary_attention_factor(c)),
      softmax_scale_(mla_softmax_scale(c)) {
  const int64_t hidden = c.hidden_size, heads = c.num_attention_heads;
  const char* what = "num_attention_heads * head dimension";
  if (c.q_lora_rank > 0) {
    q_a_proj = register_module("q_a_proj", replicated(hidden, c.q_lora_rank));
    q_a_layernorm = register_module("q_a_layernorm", RMSNorm(c.q_lora_rank, kLatentNormEps));
    q_b_proj = register_module("q_b_proj",
                               column_parallel(c.q_lora_rank, heads * c.qk_head_dim(), tp_, what));
  } else {
    q_proj = register_module("q_proj", column_parallel(hidden, heads * c.qk_head_dim(), tp_, what));
  }
  kv_a_proj_with_mqa = register_module("kv_a_proj_with_mqa",
                                       replicated(hidden, c.kv_lora_rank + c.qk_rope_head_dim));
  kv_a_layernorm = register_module("kv_a_layernorm", RMSNorm(c.kv_lora_rank, kLatentNormEps));
  kv_b_proj = register_module(
      "kv_b_proj",
      column_parallel(c.kv_lora_rank, heads * (c.qk_nope_head_dim + c.v_head_dim), tp_, what));
  o_proj = register_module("o_proj", row_parallel(heads * c.v_head_dim, hidden, tp_, what));
  const std::vector<float> inv_freq = rotary_inverse_frequencies(c);
  inv_freq_ = torch::tensor(inv_freq, torch::kFloat32);
}

torch::Tensor MlaAttentionImpl::forward(const torch::Tensor& x) {
  LayerKeyValueCache fresh;
  return run(x, fresh);
}

torch::Tensor MlaAttentionImpl::forward_cached(const torch::Tensor& x, LayerKeyValueCache& cache) {
  return run(x, cache);
}

torch::Tensor MlaAttentionImpl::project(const torch::nn::Linear& linear, const torch::Tensor& x,
                                        const char* name) const {
  return model_ops::project(linear, x, adapters, name, fused);
}

torch::Tensor MlaAttentionImpl::rotate(const torch::Tensor& x, int64_t first_position,
                                       const torch::Tensor& left_padding) const {
  const int64_t seq = x.size(-2);
  const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(x.device());
  const torch::Tensor inv_freq = inv_freq_.to(x.device());
  // Left-padded rows (batched decoding): each row's positions from its first token, the angles
  // [batch, 1, seq, half] broadcast over the heads.
  const torch::Tensor angles =
      left_padding.defined()
          ? (padded_positions(left_padding, first_position, seq).unsqueeze(-1) * inv_freq)
                .unsqueeze(1)
          : torch::outer(torch::arange(first_position, first_position + seq, options), inv_freq);
  return rotate_by(x, angles);
}

torch::Tensor MlaAttentionImpl::rotate_by(const torch::Tensor& x,
                                          const torch::Tensor& angles) const {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor cos = angles.cos() * attention_factor_, sin = angles.sin() * attention_factor_;
  if (config_.model_type == "deepseek_v2") {
    // Complex rotation of the pairs (x[2i], x[2i+1]) in fp32; the output stays interleaved.
    const torch::Tensor wide = x.to(torch::kFloat32);
    const torch::Tensor even = wide.slice(-1, 0, c10::nullopt, 2);
    const torch::Tensor odd = wide.slice(-1, 1, c10::nullopt, 2);
    return torch::stack({even * cos - odd * sin, even * sin + odd * cos}, -1)
        .flatten(-2)
        .to(x.scalar_type());
  }
  // V3: cos/sin in the activation dtype; interleaved pairs come out de-interleaved
  // [evens' | odds'], the half-split layout rotates (x[i], x[i + d/2]).
  cos = cos.to(x.scalar_type());
  sin = sin.to(x.scalar_type());
  const torch::Tensor first =
      config_.rope_interleave ? x.slice(-1, 0, c10::nullopt, 2) : x.narrow(-1, 0, half);
  const torch::Tensor second =
      config_.rope_interleave ? x.slice(-1, 1, c10::nullopt, 2) : x.narrow(-1, half, half);
  return torch::cat({first * cos - second * sin, second * cos + first * sin}, -1);
}

torch::Tensor MlaAttentionImpl::run(const torch::Tensor& x, LayerKeyValueCache& cache) {
  const int64_t batch = x.size(0), seq = x.size(1);
  const int64_t nope = config_.qk_nope_head_dim, rope = config_.qk_rope_head_dim;
  const int64_t value_dim = config_.v_head_dim, latent_dim = config_.kv_lora_rank;
  // Queries of this rank's heads: [batch, heads, seq, nope + rope].
  torch::Tensor q =
      q_proj ? project(q_proj, enter_tp(x, tp_), "q_proj")
             : project(q_b_proj, enter_tp(q_a_layernorm(project(q_a_proj, x, "q_a_proj")), tp_),
                       "q_b_proj");
  q = q.view({batch, seq, heads_, nope + rope}).transpose(1, 2);
  const int64_t past = cache.length();
  const torch::Tensor query = torch::cat(
      {q.narrow(-1, 0, nope), rotate(q.narrow(-1, nope, rope), past, cache.left_padding)}, -1);
  // The compressed keys and values of these tokens, then of every token so far.
  const torch::Tensor compressed = project(kv_a_proj_with_mqa, x, "kv_a_proj_with_mqa");
  torch::Tensor latent = kv_a_layernorm(compressed.narrow(-1, 0, latent_dim).contiguous());
  torch::Tensor rope_key =
      rotate(compressed.narrow(-1, latent_dim, rope).unsqueeze(1), past, cache.left_padding);
  latent = latent.unsqueeze(1);
  if (cache.key.defined()) {
    latent = torch::cat({cache.key, latent}, 2);
    rope_key = torch::cat({cache.value, rope_key}, 2);
  }
  cache.key = latent;
  cache.value = rope_key;
  const int64_t total = latent.size(2);
  // Per-head keys and values from the latent: [batch, heads, total, nope + value_dim].
  const torch::Tensor expanded = project(kv_b_proj, enter_tp(latent.squeeze(1), tp_), "kv_b_proj")
                                     .view({batch, total, heads_, nope + value_dim})
                                     .transpose(1, 2);
  const torch::Tensor key = torch::cat(
      {expanded.narrow(-1, 0, nope), enter_tp(rope_key, tp_).expand({batch, heads_, total, rope})},
      -1);
  const torch::Tensor value = expanded.narrow(-1, nope, value_dim);
  torch::Tensor scores = torch::matmul(query, key.transpose(-2, -1)) * softmax_scale_;
  const torch::Tensor future =
      cache.left_padding.defined()
          ? padded_attention_mask(cache.left_padding, past, seq)
          : torch::ones({seq, total}, torch::TensorOptions().dtype(torch::kBool).device(x.device()))
                .triu(1 + past);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  const torch::Tensor probs =
      torch::softmax(scores.to(torch::kFloat32), -1).to(query.scalar_type());
  const torch::Tensor attended =
      torch::matmul(probs, value).transpose(1, 2).reshape({batch, seq, heads_ * value_dim});
  return leave_tp(project(o_proj, attended, "o_proj"), tp_);
}

MoeGateImpl::MoeGateImpl(const ModelConfig& c) {
  weight = register_parameter("weight", deferred_tensor({c.n_routed_experts, c.hidden_size}));
  if (c.model_type == "deepseek_v3")
    e_score_correction_bias = register_parameter(
        "e_score_correction_bias", torch::zeros({c.n_routed_experts}), /*requires_grad=*/false);
}

ExpertImpl::ExpertImpl(int64_t hidden, int64_t intermediate) {
  gate_proj = register_module("gate_proj", replicated(hidden, intermediate));
  up_proj = register_module("up_proj", replicated(hidden, intermediate));
  down_proj = register_module("down_proj", replicated(intermediate, hidden));
}

torch::Tensor ExpertImpl::forward(const torch::Tensor& x) {
  const torch::Tensor gate = model_ops::project(gate_proj->weight, x, fused);
  const torch::Tensor up = model_ops::project(up_proj->weight, x, fused);
  return model_ops::project(down_proj->weight, F::silu(gate) * up, fused);
}

MoeImpl::MoeImpl(const ModelConfig& c, comm::CommunicatorPtr tp_group,
                 comm::CommunicatorPtr ep_group)
    : config_(c) {
  if (ep_group && ep_group->size() > 1)
    dispatcher_ = std::make_shared<ExpertDispatcher>(std::move(ep_group), c.n_routed_experts);
  gate = register_module("gate", MoeGate(c));
  auto holder = register_module("experts", std::make_shared<torch::nn::Module>());
  const int64_t count = dispatcher_ ? dispatcher_->local_experts() : c.n_routed_experts;
  for (int64_t e = first_local_expert(); e < first_local_expert() + count; ++e)
    experts.push_back(
        holder->register_module(std::to_string(e), Expert(c.hidden_size, c.moe_intermediate_size)));
  if (c.n_shared_experts > 0)
    shared_experts = register_module(
        "shared_experts",
        Mlp(c.hidden_size, c.moe_intermediate_size * c.n_shared_experts, std::move(tp_group)));
  load_ = torch::zeros({c.n_routed_experts}, torch::kInt64);
}

int64_t MoeImpl::first_local_expert() const {
  return dispatcher_ ? dispatcher_->first_local_expert() : 0;
}

torch::Tensor MoeImpl::take_expert_load() {
  torch::Tensor load = load_;
  load_ = torch::zeros_like(load);
  return load;
}

double MoeImpl::take_balance_loss() {
  const double sum = balance_sum_;
  balance_sum_ = 0.0;
  return sum;
}

namespace {
// Identity on the hidden states whose backward also gives `loss` the gradient `weight`: adds
// weight x loss to the objective without touching the forward values (DeepSeek's
// AddAuxiliaryLoss).
struct AddBalanceLoss : torch::autograd::Function<AddBalanceLoss> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& loss, double weight) {
    ctx->saved_data["weight"] = weight;
    return hidden.view_as(hidden);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    // The balance loss is fp32 (moe_router.h).
    return {grads[0], torch::full({}, ctx->saved_data["weight"].toDouble(), torch::kFloat32),
            torch::Tensor()};
  }
};
}  // namespace

torch::Tensor MoeImpl::forward(const torch::Tensor& x) {
  const torch::Tensor tokens = x.reshape({-1, x.size(-1)});
  const torch::Tensor logits =
      F::linear(tokens.to(torch::kFloat32), gate->weight.to(torch::kFloat32));
  const TokenRouting routing = route_tokens(logits, gate->e_score_correction_bias, config_);
  torch::Tensor out = run_experts(tokens, routing.experts, routing.weights).view(x.sizes());
  if (shared_experts) out = out + shared_experts(x);
  if (balance_weight_ > 0 && torch::GradMode::is_enabled()) {  // training (or recompute)
    const int64_t sequences = x.dim() == 3 ? x.size(0) : 1;
    const torch::Tensor loss =
        sequence_balance_loss(logits, routing.experts, sequences, config_).sum();
    balance_sum_ += loss.item<double>();
    out = AddBalanceLoss::apply(out, loss, balance_weight_);
  }
  return out;
}

torch::Tensor MoeImpl::run_experts(const torch::Tensor& x, const torch::Tensor& chosen,
                                   const torch::Tensor& weights) {
  const int64_t per_token = chosen.size(1);
  const torch::Tensor flat = chosen.reshape({-1});
  // Token-expert pairs sorted by expert: each expert's tokens form one contiguous group.
  const torch::Tensor order =
      std::get<1>(flat.sort(/*stable=*/c10::optional<bool>(true), /*dim=*/0));
  const torch::Tensor token_of = order.div(per_token, "floor");
  const torch::Tensor counts = torch::bincount(flat, {}, config_.n_routed_experts).to(torch::kCPU);
  if (torch::GradMode::is_enabled()) load_ += counts;  // training (or recompute): once per batch
  const torch::Tensor grouped = x.index_select(0, token_of);
  torch::Tensor expert_outputs;
  if (dispatcher_) {
    const DispatchedTokens arrived = dispatcher_->dispatch(grouped, counts);
    expert_outputs = dispatcher_->combine(
        run_local_experts(arrived.rows, arrived.rows_per_local_expert), arrived);
  } else {
    const int64_t* count = counts.data_ptr<int64_t>();
    expert_outputs =
        run_local_experts(grouped, std::vector<int64_t>(count, count + counts.numel()));
  }
  const torch::Tensor pair_weights = weights.reshape({-1}).index_select(0, order).unsqueeze(1);
  const torch::Tensor weighted =
      (expert_outputs.to(torch::kFloat32) * pair_weights).to(x.scalar_type());
  return torch::zeros_like(x).index_add(0, token_of, weighted);
}

torch::Tensor MoeImpl::run_local_experts(const torch::Tensor& rows,
                                         const std::vector<int64_t>& rows_per_expert) {
  // Every expert runs, on an empty group too: its weights then get a zero gradient instead of
  // none, so the data-parallel engines see every gradient of the layer arrive (ZeRO launches a
  // unit's reduction when all its gradients are in; a rank waiting for an unused expert's would
  // order its collectives differently from the others).
  std::vector<torch::Tensor> outputs;
  int64_t start = 0;
  for (size_t e = 0; e < experts.size(); ++e) {
    outputs.push_back(experts[e]->forward(rows.narrow(0, start, rows_per_expert[e])));
    start += rows_per_expert[e];
  }
  return torch::cat(outputs);
}

DeepseekDecoderLayerImpl::DeepseekDecoderLayerImpl(const ModelConfig& c, int64_t index,
                                                   comm::CommunicatorPtr tp_group,
                                                   comm::CommunicatorPtr ep_group, bool fused) {
  self_attn = register_module("self_attn", MlaAttention(c, tp_group));
  self_attn->fused = fused;
  if (self_attn->q_a_layernorm) self_attn->q_a_layernorm->fused = fused;
  self_attn->kv_a_layernorm->fused = fused;
  if (c.is_moe_layer(index)) {
    moe = register_module("mlp", Moe(c, tp_group, std::move(ep_group)));
    for (Expert& expert : moe->experts) expert->fused = fused;
    if (moe->shared_experts) moe->shared_experts->fused = fused;
  } else {
    dense_mlp = register_module("mlp", Mlp(c.hidden_size, c.intermediate_size, tp_group));
    dense_mlp->fused = fused;
  }
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  input_layernorm->fused = fused;
  post_attention_layernorm->fused = fused;
}

torch::Tensor DeepseekDecoderLayerImpl::feed_forward(const torch::Tensor& x) {
  return moe ? moe->forward(x) : dense_mlp->forward(x);
}

torch::Tensor DeepseekDecoderLayerImpl::forward(const torch::Tensor& x) {
  const torch::Tensor h = x + self_attn(input_layernorm(x));
  return h + feed_forward(post_attention_layernorm(h));
}

torch::Tensor DeepseekDecoderLayerImpl::forward_cached(const torch::Tensor& x,
                                                       LayerKeyValueCache& cache) {
  const torch::Tensor h = x + self_attn->forward_cached(input_layernorm(x), cache);
  return h + feed_forward(post_attention_layernorm(h));
}

DeepseekModelImpl::DeepseekModelImpl(const ModelConfig& config, ModelShardSpec shard)
    : DecoderLMImpl(config, shard),
      local_experts_(config.n_routed_experts / (shard.ep_group ? shard.ep_group->size() : 1)) {
  DST_CHECK(config_.is_deepseek(), ConfigError,
            "DeepseekModel built for model_type '" << config_.model_type << "'");
  build_stack([this, ep_group = shard.ep_group](int64_t index) {
    DeepseekDecoderLayer layer(config_, index, tp_group(), ep_group, fused_kernels());
    layers.emplace(index, layer);
    return layer.ptr();
  });
}

namespace {
bool is_routing_bias(const std::string& name) {
  const std::string bias = ".e_score_correction_bias";
  return name.size() > bias.size() &&
         name.compare(name.size() - bias.size(), bias.size(), bias) == 0;
}
}  // namespace

void DeepseekModelImpl::initialize_parameter(const std::string& name, torch::Tensor& parameter,
                                             uint64_t seed) {
  if (is_routing_bias(name)) {
    torch::NoGradGuard no_grad;
    allocate_deferred(parameter);
    parameter.zero_();
    return;
  }
  CausalLM::initialize_parameter(name, parameter, seed);
}

bool DeepseekModelImpl::keeps_fp32(const std::string& name) const { return is_routing_bias(name); }

namespace {
constexpr const char* kRoutedExperts = ".mlp.experts.";
}  // namespace

bool DeepseekModelImpl::is_routed_expert(const std::string& name) const {
  return name.find(kRoutedExperts) != std::string::npos;
}

std::string DeepseekModelImpl::routed_expert_name_on(const std::string& name, int ep_rank) const {
  const size_t at = name.find(kRoutedExperts);
  DST_ASSERT(at != std::string::npos, "'" << name << "' is not a routed expert's parameter");
  const size_t begin = at + std::string(kRoutedExperts).size();
  const size_t end = name.find('.', begin);
  const int64_t expert = std::stoll(name.substr(begin, end - begin));
  return name.substr(0, begin) +
         std::to_string(expert % local_experts_ + ep_rank * local_experts_) + name.substr(end);
}

namespace {

// Activation values one token keeps for the backward in layer `layer` on a rank of `tp` (ATen
// attention: scores and probabilities over `seq` keys per head).
int64_t layer_values_per_token(const ModelConfig& c, int64_t layer, int64_t seq, int tp) {
  const int64_t heads = c.num_attention_heads / tp, qk = c.qk_head_dim();
  const int64_t latent = c.kv_lora_rank, rope = c.qk_rope_head_dim;
  // Whole on every tp rank: norms and residuals, the q latent and its norm, the compressed
  // key/value, its normalised latent and the rotated rope key.
  const int64_t replicated =
      4 * c.hidden_size + 2 * c.q_lora_rank + (latent + rope) + latent + 2 * rope;
  // This rank's heads: q, q rotated, k/v expansion, key, output, scores and probabilities.
  const int64_t attention =
      heads * (3 * qk + (c.qk_nope_head_dim + c.v_head_dim) + c.v_head_dim + 2 * seq);
  if (!c.is_moe_layer(layer)) return replicated + attention + 4 * c.intermediate_size / tp;
  // Router logits and scores (fp32, counted as values), each routed copy's input, gate, up,
  // product, output, the concatenated outputs and the weighted ones; the shared experts' SwiGLU on
  // this rank's slice.
  const int64_t k = c.num_experts_per_tok;
  const int64_t routed =
      2 * c.n_routed_experts + k * (4 * c.hidden_size + 3 * c.moe_intermediate_size);
  const int64_t shared = 4 * c.moe_intermediate_size * c.n_shared_experts / tp;
  return replicated + attention + routed + shared;
}

}  // namespace

int64_t DeepseekModelImpl::activation_bytes(int64_t rows, int64_t seq_len, Precision compute,
                                            int64_t, bool with_logits,
                                            int64_t checkpointed_layers) const {
  const int64_t tokens = rows * seq_len, element = bytes_of(compute);
  int64_t full = 0, largest = 0;
  for (const auto& [index, layer] : layers) {
    const int64_t bytes =
        tokens * layer_values_per_token(config_, index, seq_len, tp_size()) * element;
    full += bytes;
    largest = std::max(largest, bytes);
  }
  const int64_t local = static_cast<int64_t>(layers.size());
  int64_t total = local == 0 ? 0 : full * (local - checkpointed_layers) / local;
  total += checkpointed_layers * tokens * config_.hidden_size * element;  // their inputs
  if (checkpointed_layers > 0) total += largest;  // the layer being recomputed
  if (with_logits) total += tokens * 2 * (config_.vocab_size / tp_size()) * 4;
  return total;
}

TpLayerTraffic DeepseekModelImpl::tp_layer_traffic(int64_t layer) const {
  const ModelConfig& c = config_;
  TpLayerTraffic traffic;
  traffic.forward = {c.hidden_size};
  traffic.backward = {c.q_lora_rank > 0 ? c.q_lora_rank : c.hidden_size, c.kv_lora_rank,
                      c.qk_rope_head_dim};
  if (!c.is_moe_layer(layer) || c.n_shared_experts > 0) {
    traffic.forward.push_back(c.hidden_size);
    traffic.backward.push_back(c.hidden_size);
  }
  return traffic;
}

void DeepseekModelImpl::set_balance_loss_weight(double gradient_weight) {
  for (auto& [index, layer] : layers)
    if (layer->moe) layer->moe->set_balance_loss_weight(gradient_weight);
}

double DeepseekModelImpl::take_balance_loss() {
  double sum = 0.0;
  for (auto& [index, layer] : layers)
    if (layer->moe) sum += layer->moe->take_balance_loss();
  return sum;
}

std::map<int64_t, torch::Tensor> DeepseekModelImpl::take_expert_loads() {
  std::map<int64_t, torch::Tensor> loads;
  for (auto& [index, layer] : layers)
    if (layer->moe) loads[index] = layer->moe->take_expert_load();
  return loads;
}

void DeepseekModelImpl::add_to_routing_bias(int64_t layer, const torch::Tensor& delta) {
  auto found = layers.find(layer);
  DST_CHECK(found != layers.end() && found->second->moe, InternalError,
            "layer " << layer << " is not a MoE layer of this rank");
  torch::Tensor& bias = found->second->moe->gate->e_score_correction_bias;
  DST_CHECK(bias.defined(), ConfigError,
            config_.model_type << " has no routing correction bias to update (DeepSeek-V3 has)");
  torch::NoGradGuard no_grad;
  bias.add_(delta.to(bias.scalar_type()));
}

std::vector<ProjectionSite> DeepseekModelImpl::projection_sites() {
  std::vector<ProjectionSite> sites;
  auto add = [&](const std::string& module, torch::nn::Linear& linear,
                 std::map<std::string, std::shared_ptr<LinearAdapter>>& slots, const char* slot) {
    if (linear) sites.push_back(model_ops::projection_site(*this, module, linear, slots, slot));
  };
  for (auto& [index, layer] : layers) {
    const std::string prefix = "model.layers." + std::to_string(index) + ".";
    MlaAttention& attn = layer->self_attn;
    for (auto [name, linear] : {std::pair{"q_proj", &attn->q_proj},
                                {"q_a_proj", &attn->q_a_proj},
                                {"q_b_proj", &attn->q_b_proj},
                                {"kv_a_proj_with_mqa", &attn->kv_a_proj_with_mqa},
                                {"kv_b_proj", &attn->kv_b_proj},
                                {"o_proj", &attn->o_proj}})
      add(prefix + "self_attn." + name, *linear, attn->adapters, name);
    Mlp mlp = layer->dense_mlp ? layer->dense_mlp
                               : (layer->moe ? layer->moe->shared_experts : Mlp(nullptr));
    if (!mlp) continue;
    const std::string module = prefix + (layer->dense_mlp ? "mlp." : "mlp.shared_experts.");
    for (auto [name, linear] : {std::pair{"gate_proj", &mlp->gate_proj},
                                {"up_proj", &mlp->up_proj},
                                {"down_proj", &mlp->down_proj}})
      add(module + name, *linear, mlp->adapters, name);
  }
  return sites;
}

}  // namespace dst

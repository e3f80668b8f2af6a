// DeepSeek-V2/V3: the router's choice and weights, YaRN's numbers, parameter names and counts,
// the compressed cache against a full forward. Logits against transformers are checked in
// tests/interop/test_deepseek_interop.sh.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "deepseek_train/checkpoint/gguf_export.h"
#include "deepseek_train/checkpoint/hf_interop.h"
#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/core/deferred_tensor.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/model/deepseek.h"
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/model/moe_router.h"
#include "deepseek_train/model/rope_scaling.h"
#include "deepseek_train/train/expert_load_balancer.h"
#include "deepseek_train/train/train_config.h"
#include "support/deepseek_config.h"

using namespace dst;

namespace {

ModelConfig tiny_v3() {
  ModelConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.max_position_embeddings = 64;
  c = dst::testing::tiny_deepseek_v3(c);
  c.moe_intermediate_size = 12;
  return c;
}

ModelConfig tiny_v2() {
  ModelConfig c = tiny_v3();
  c.model_type = "deepseek_v2";
  c.topk_method = "group_limited_greedy";
  c.scoring_func = "softmax";
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1.5;
  c.q_lora_rank = 0;
  return c;
}

}  // namespace

TEST_CASE("deepseek: V3 routing keeps the best groups, chooses with the bias, weighs without",
          "[model][deepseek]") {
  ModelConfig c = tiny_v3();  // 8 experts in 4 groups of 2, 2 groups kept, 2 experts per token
  // Groups scored by their two best sigmoid scores: group 3 (e6, e7) 1.81, group 0 (e0, e1) 1.22,
  // group 2 (e4, e5) 1.12: the best two experts of groups 3 and 0 are e0 and e7.
  torch::Tensor logits = torch::tensor({{3.0f, -1.0f, -2.0f, -2.0f, 0.5f, 0.0f, 2.0f, 2.5f}});
  torch::Tensor no_bias = torch::zeros({8});
  TokenRouting r = route_tokens(logits, no_bias, c);
  auto chosen = std::get<0>(r.experts.sort(-1));
  CHECK(chosen.equal(torch::tensor({{0, 7}}, torch::kInt64)));
  torch::Tensor s = logits.sigmoid();
  const float s0 = s[0][0].item<float>(), s7 = s[0][7].item<float>();
  auto weights = r.weights.gather(1, std::get<1>(r.experts.sort(-1)));
  CHECK(weights[0][0].item<float>() == Approx(2.5 * s0 / (s0 + s7)));
  CHECK(weights[0][1].item<float>() == Approx(2.5 * s7 / (s0 + s7)));

  // A bias moves the choice (group 2 now scores best), but the weights stay the unbiased
  // sigmoid scores.
  torch::Tensor bias = torch::zeros({8});
  bias[4] = 3.0f;
  bias[5] = 3.0f;
  r = route_tokens(logits, bias, c);
  chosen = std::get<0>(r.experts.sort(-1));
  CHECK(chosen.equal(torch::tensor({{4, 5}}, torch::kInt64)));
  const float s4 = s[0][4].item<float>(), s5 = s[0][5].item<float>();
  CHECK(r.weights.sum().item<float>() == Approx(2.5));
  weights = r.weights.gather(1, std::get<1>(r.experts.sort(-1)));
  CHECK(weights[0][0].item<float>() == Approx(2.5 * s4 / (s4 + s5)));
}

TEST_CASE("deepseek: gradients reach the router logits only through the chosen weights",
          "[model][deepseek]") {
  for (const ModelConfig& c : {tiny_v3(), tiny_v2()}) {
    torch::Tensor logits = torch::randn({5, 8}, torch::kFloat32).requires_grad_(true);
    TokenRouting r = route_tokens(logits, torch::randn({8}), c);
    (r.weights * torch::randn({5, 2})).sum().backward();  // V3's normalised weights sum to 2.5
    torch::Tensor grad = logits.grad();
    for (int64_t t = 0; t < 5; ++t) {
      for (int64_t e = 0; e < 8; ++e) {
        const bool chosen = (r.experts[t] == e).any().item<bool>();
        // V3: a sigmoid score depends on its own logit only; V2's softmax on every logit.
        if (c.model_type == "deepseek_v3" && !chosen) CHECK(grad[t][e].item<float>() == 0.0f);
      }
      CHECK(grad[t].abs().sum().item<float>() > 0);
    }
  }
}

namespace {

// DeepSeek's sequence-wise balance loss spelled out: per sequence b of T tokens,
// sum_i f_i P_i with f_i = E / (K T) * |{(t, k): experts[t][k] = i}| and P_i the mean over t of
// the token's normalised score for i (V3: sigmoid / its sum over experts; V2: softmax).
// Differentiable in `logits`.
torch::Tensor balance_loss_by_hand(const torch::Tensor& logits, const torch::Tensor& experts,
                                   int64_t sequences, const ModelConfig& c) {
  const int64_t e_count = c.n_routed_experts, k = experts.size(1);
  const int64_t length = logits.size(0) / sequences;
  std::vector<torch::Tensor> losses;
  for (int64_t b = 0; b < sequences; ++b) {
    torch::Tensor loss = torch::zeros({});
    for (int64_t i = 0; i < e_count; ++i) {
      int64_t pairs = 0;
      torch::Tensor p = torch::zeros({});
      for (int64_t t = b * length; t < (b + 1) * length; ++t) {
        for (int64_t j = 0; j < k; ++j) pairs += experts[t][j].item<int64_t>() == i ? 1 : 0;
        const torch::Tensor row = logits[t];
        const torch::Tensor scores =
            c.model_type == "deepseek_v3" ? row.sigmoid() / row.sigmoid().sum() : row.softmax(0);
        p = p + scores[i] / static_cast<double>(length);
      }
      const double f = static_cast<double>(e_count) * pairs / static_cast<double>(k * length);
      loss = loss + f * p;
    }
    losses.push_back(loss);
  }
  return torch::stack(losses);
}

}  // namespace

TEST_CASE("deepseek: the sequence-wise balance loss: its value and the gradient a MoE layer adds",
          "[model][deepseek]") {
  for (const ModelConfig& c : {tiny_v3(), tiny_v2()}) {
    INFO(c.model_type);
    torch::manual_seed(3);
    const int64_t sequences = 3, length = 5;
    torch::Tensor logits = torch::randn({sequences * length, 8}) * 2;
    const TokenRouting routing = route_tokens(logits, torch::zeros({8}), c);
    const torch::Tensor loss = sequence_balance_loss(logits, routing.experts, sequences, c);
    const torch::Tensor expected = balance_loss_by_hand(logits, routing.experts, sequences, c);
    REQUIRE(loss.sizes() == expected.sizes());
    for (int64_t b = 0; b < sequences; ++b)
      CHECK(loss[b].item<double>() == Approx(expected[b].item<double>()).epsilon(1e-6));
    // Equal scores make every expert's P equal, 1/E: the loss is 1 whatever the routing.
    const torch::Tensor flat = torch::zeros({sequences * length, 8});
    CHECK(sequence_balance_loss(flat, routing.experts, sequences, c)
              .allclose(torch::ones({sequences})));

    // A MoE layer's backward gives the loss the weight it was told, on top of its output's
    // gradient: the same gradients as differentiating output + weight * loss by hand.
    Moe moe(c, nullptr);
    for (auto& parameter : moe->parameters()) {
      torch::NoGradGuard no_grad;
      allocate_deferred(parameter);
      parameter.normal_(0, 0.3);
    }
    const torch::Tensor x = torch::randn({sequences, length, c.hidden_size});
    const torch::Tensor output_weights = torch::randn({sequences, length, c.hidden_size});
    const double weight = 0.25;
    // The loss's weight inside the layer, and added by hand.
    auto gradients = [&](double layer_weight, double hand_weight) {
      for (auto& parameter : moe->parameters()) parameter.mutable_grad() = torch::Tensor();
      torch::Tensor input = x.clone().requires_grad_(true);
      moe->set_balance_loss_weight(layer_weight);
      torch::Tensor objective = (moe->forward(input) * output_weights).sum();
      if (hand_weight > 0) {
        const torch::Tensor tokens = input.reshape({-1, c.hidden_size});
        const torch::Tensor router_logits =
            torch::nn::functional::linear(tokens, moe->gate->weight);
        const TokenRouting r = route_tokens(router_logits, moe->gate->e_score_correction_bias, c);
        objective =
            objective +
            hand_weight * balance_loss_by_hand(router_logits, r.experts, sequences, c).sum();
      }
      objective.backward();
      return std::make_pair(moe->gate->weight.grad().clone(), input.grad().clone());
    };
    const auto [gate_layer, input_layer] = gradients(weight, 0.0);
    const double taken = moe->take_balance_loss();
    const auto [gate_hand, input_hand] = gradients(0.0, weight);
    CHECK(moe->take_balance_loss() == 0.0);  // nothing accumulates with weight 0
    CHECK(gate_layer.allclose(gate_hand, 1e-5, 1e-6));
    CHECK(input_layer.allclose(input_hand, 1e-5, 1e-6));
    CHECK(taken == Approx(balance_loss_by_hand(
                              torch::nn::functional::linear(x.reshape({-1, c.hidden_size}),
                                                            moe->gate->weight),
                              route_tokens(torch::nn::functional::linear(
                                               x.reshape({-1, c.hidden_size}), moe->gate->weight),
                                           moe->gate->e_score_correction_bias, c)
                                  .experts,
                              sequences, c)
                              .sum()
                              .item<double>())
                       .epsilon(1e-5));
    // The loss moves the router: without it the gradient differs.
    const auto [gate_plain, input_plain] = gradients(0.0, 0.0);
    CHECK_FALSE(gate_layer.allclose(gate_plain, 1e-5, 1e-6));
  }
}

TEST_CASE("deepseek: V2 routing is softmax, group-limited or greedy, never renormalised",
          "[model][deepseek]") {
  ModelConfig c = tiny_v2();
  // Group scores (best expert per group): g0 = e0, g1 = e2, g2 = e5, g3 = e6.
  torch::Tensor logits = torch::tensor({{2.0f, 1.9f, 0.0f, 0.0f, 1.0f, 2.1f, 1.5f, 0.0f}});
  torch::Tensor p = logits.softmax(-1);
  TokenRouting r = route_tokens(logits, {}, c);
  // Groups 2 (best e5) and 0 (best e0) are kept; the best two of {e0, e1, e4, e5} are e5, e0.
  CHECK(std::get<0>(r.experts.sort(-1)).equal(torch::tensor({{0, 5}}, torch::kInt64)));
  CHECK(r.weights.sum().item<float>() ==
        Approx(1.5 * (p[0][0].item<float>() + p[0][5].item<float>())));
  c.topk_group = 1;  // only group 2: e5 and e4
  r = route_tokens(logits, {}, c);
  CHECK(std::get<0>(r.experts.sort(-1)).equal(torch::tensor({{4, 5}}, torch::kInt64)));
  c.topk_method = "greedy";
  r = route_tokens(logits, {}, c);
  CHECK(std::get<0>(r.experts.sort(-1)).equal(torch::tensor({{0, 5}}, torch::kInt64)));
}

TEST_CASE("deepseek: YaRN frequencies and softmax scale", "[model][deepseek]") {
  ModelConfig c = tiny_v3();
  c.qk_rope_head_dim = 64;
  const std::vector<float> plain = rotary_inverse_frequencies(c);
  REQUIRE(plain.size() == 32);
  CHECK(plain[0] == 1.0f);
  CHECK(plain[1] == Approx(std::pow(10000.0, -2.0 / 64)));
  CHECK(mla_softmax_scale(c) == Approx(1.0 / std::sqrt(72.0)));
  CHECK(rotary_attention_factor(c) == 1.0);
  c.rope_scaling.rope_type = "yarn";
  c.rope_scaling.factor = 40;
  c.rope_scaling.original_max_position_embeddings = 4096;
  c.rope_scaling.mscale = c.rope_scaling.mscale_all_dim = 1.0;
  const std::vector<float> yarn = rotary_inverse_frequencies(c);
  // High frequencies (many turns over the original context) kept, low ones divided by factor.
  CHECK(yarn[0] == plain[0]);
  CHECK(yarn[31] == Approx(plain[31] / 40).epsilon(1e-6));
  CHECK(yarn[20] < plain[20]);
  CHECK(yarn[20] > plain[20] / 40);
  const double m = 0.1 * std::log(40.0) + 1.0;  // 1.36889
  CHECK(mla_softmax_scale(c) == Approx(m * m / std::sqrt(72.0)));
  CHECK(rotary_attention_factor(c) == Approx(1.0));
  c.rope_scaling.mscale_all_dim = 0.5;
  CHECK(rotary_attention_factor(c) == Approx(m / (0.05 * std::log(40.0) + 1.0)));
}

TEST_CASE("deepseek: Hugging Face names, parameter count, cache equals a full forward",
          "[model][deepseek]") {
  for (const ModelConfig& c : {tiny_v3(), tiny_v2()}) {
    DeepseekModel model(c);
    auto params = model->named_parameters();
    const bool v3 = c.model_type == "deepseek_v3";
    CHECK(params.contains(v3 ? "model.layers.0.self_attn.q_a_proj.weight"
                             : "model.layers.0.self_attn.q_proj.weight"));
    CHECK(params.contains("model.layers.0.mlp.gate_proj.weight"));
    CHECK(params.contains("model.layers.1.mlp.experts.7.down_proj.weight"));
    CHECK(params.contains("model.layers.2.mlp.shared_experts.up_proj.weight"));
    CHECK(params.contains("model.layers.2.mlp.gate.weight"));
    CHECK(params.contains("model.layers.2.mlp.gate.e_score_correction_bias") == v3);
    CHECK(params["model.layers.1.self_attn.kv_a_proj_with_mqa.weight"].sizes() ==
          torch::IntArrayRef({16 + 8, 32}));
    CHECK(params["model.layers.1.self_attn.kv_b_proj.weight"].sizes() ==
          torch::IntArrayRef({4 * (8 + 12), 16}));
    int64_t trainable = 0;
    for (const auto& p : model->parameters())
      if (p.requires_grad()) trainable += p.numel();
    CHECK(trainable == c.num_parameters());
    CHECK(c.num_active_parameters() == c.num_parameters() - 2 * 6 * 3 * 32 * 12);
    model->initialize(3);
    if (v3)
      CHECK(params["model.layers.2.mlp.gate.e_score_correction_bias"].abs().sum().item<float>() ==
            0);

    torch::NoGradGuard no_grad;
    const torch::Tensor ids = torch::randint(0, c.vocab_size, {2, 11}, torch::kInt64);
    const torch::Tensor full = model->forward(ids);
    KeyValueCache cache;
    torch::Tensor first = model->forward_incremental(ids.narrow(1, 0, 6), cache);
    torch::Tensor rest = model->forward_incremental(ids.narrow(1, 6, 5), cache);
    CHECK(cache.layers.at(0).length() == 11);
    CHECK(cache.layers.at(0).key.sizes() == torch::IntArrayRef({2, 1, 11, 16}));
    CHECK(torch::allclose(torch::cat({first, rest}, 1), full, 1e-5, 1e-5));
  }
}

TEST_CASE("deepseek: configs that cannot make a model are one-line errors", "[model][deepseek]") {
  ModelConfig c = tiny_v3();
  c.topk_group = 5;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("model.topk_group (5) must be in 1..4"));
  c = tiny_v3();
  c.topk_method = "greedy";
  CHECK_THROWS_WITH(c.validate(),
                    Catch::Contains("model.topk_method 'greedy' is not known for deepseek_v3"));
  c = tiny_v2();
  c.scoring_func = "sigmoid";
  CHECK_THROWS_WITH(c.validate(),
                    Catch::Contains("model.scoring_func 'sigmoid' is not known for deepseek_v2"));
  c = tiny_v3();
  c.num_key_value_heads = 2;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("must equal num_attention_heads"));
  // A config.json round trip keeps every field.
  c = tiny_v3();
  c.rope_scaling.rope_type = "yarn";
  c.rope_scaling.factor = 4;
  c.rope_scaling.mscale_all_dim = 0.7;
  const ModelConfig back = model_config_from_hf_json_text(model_config_to_hf_json(c), "x");
  CHECK(model_config_to_hf_json(back) == model_config_to_hf_json(c));
  CHECK(back.q_lora_rank == 24);
  CHECK(back.rope_scaling.mscale_all_dim == 0.7);
  // transformers reads beta_fast/beta_slow 0 as their defaults 32 and 1.
  const ModelConfig zero_betas = model_config_from_hf_json_text(
      R"({"model_type": "deepseek_v3", "rope_scaling": {"type": "yarn", "factor": 4,
          "beta_fast": 0, "beta_slow": 0}})",
      "b.json");
  CHECK(zero_betas.rope_scaling.beta_fast == 32);
  CHECK(zero_betas.rope_scaling.beta_slow == 1);
  CHECK_THROWS_WITH(model_config_from_hf_json_text(
                        R"({"model_type": "deepseek_v3", "moe_layer_freq": 2})", "c.json"),
                    Catch::Contains("c.json: field 'moe_layer_freq' = 2 is not implemented"));
}

TEST_CASE(
    "deepseek: the load balancer counts training forwards and moves the bias to the "
    "underloaded experts",
    "[model][deepseek]") {
  ModelConfig c = tiny_v3();
  c.num_hidden_layers = 2;
  DeepseekModel model(c);
  model->initialize(4);
  auto world = comm::make_local_communicator();
  const torch::Tensor ids = torch::randint(0, c.vocab_size, {2, 9}, torch::kInt64);
  {
    torch::NoGradGuard evaluation;  // not counted
    model->forward(ids);
  }
  model->forward(ids).sum().backward();
  const ExpertLoadBalancer balancer(0.125);
  torch::Tensor& bias = model->layers.at(1)->moe->gate->e_score_correction_bias;
  const std::map<int64_t, torch::Tensor> loads = model->take_expert_loads();
  REQUIRE(loads.size() == 1);
  const torch::Tensor load = loads.at(1);
  CHECK(load.sum().item<int64_t>() == 2 * 9 * 2);  // every token, 2 experts each
  // Put the counts back: the balancer takes them itself.
  model->forward(ids).sum().backward();
  const ExpertLoadStatistics stats = balancer.after_step(*model, *world, nullptr);
  CHECK(stats.max_over_mean ==
        Approx(load.max().item<double>() / load.to(torch::kFloat64).mean().item<double>()));
  CHECK(stats.dropped_tokens == 0);
  const torch::Tensor step = torch::sign(load.to(torch::kFloat64).mean() - load) * 0.125;
  CHECK(torch::allclose(bias, (step - step.mean()).to(torch::kFloat32)));
  CHECK(model->take_expert_loads().at(1).sum().item<int64_t>() == 0);  // cleared
  // A skipped step leaves the bias alone; V2 has no bias to move.
  model->forward(ids).sum().backward();
  const torch::Tensor before = bias.clone();
  balancer.after_step(*model, *world, nullptr, /*update_bias=*/false);
  CHECK(bias.equal(before));
  DeepseekModel v2(tiny_v2());
  CHECK_THROWS_WITH(v2->add_to_routing_bias(1, torch::zeros({8})),
                    Catch::Contains("deepseek_v2 has no routing correction bias"));
}

TEST_CASE("deepseek: bad input to the fused-expert import, the GGUF export and moe options",
          "[model][deepseek]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "dst_deepseek_bad_input";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const ModelConfig c = tiny_v3();
  { std::ofstream(dir / "config.json") << model_config_to_hf_json(c); }
  // gate_up_proj must hold gate rows then up rows: an odd row count is refused, naming the folder.
  save_safetensors((dir / "model.safetensors").string(),
                   {{"model.layers.1.mlp.experts.gate_up_proj", torch::zeros({8, 23, 32})}});
  CHECK_THROWS_WITH(
      HfModelReader(dir.string()),
      Catch::Contains(dir.string() + ": tensor 'model.layers.1.mlp.experts.gate_up_proj' must be "
                                     "[experts, out, in]"));
  // llama.cpp's deepseek2 needs shared experts: refused before anything is written.
  ModelConfig no_shared = c;
  no_shared.n_shared_experts = 0;
  const fs::path gguf = dir / "m.gguf";
  CHECK_THROWS_WITH(export_gguf(gguf.string(), no_shared, {}, GgufExportOptions{}),
                    Catch::Contains("model.n_shared_experts must be at least 1"));
  CHECK_FALSE(fs::exists(gguf));
  // The routing-bias update needs V3's bias, and a non-negative rate.
  TrainConfig train;
  train.model = tiny_v2();
  train.moe.bias_update_rate = 0.001;
  CHECK_THROWS_WITH(train.validate(),
                    Catch::Contains("moe.bias_update_rate needs a model with a routing "
                                    "correction bias (deepseek_v3), not deepseek_v2"));
  train.model = c;
  train.moe.bias_update_rate = -1;
  CHECK_THROWS_WITH(train.validate(), Catch::Contains("moe.bias_update_rate must be a "
                                                      "non-negative number"));
  // The balance loss needs routed experts, and a non-negative alpha.
  train.moe.bias_update_rate = 0;
  train.moe.aux_loss_alpha = -0.5;
  CHECK_THROWS_WITH(train.validate(), Catch::Contains("moe.aux_loss_alpha must be a "
                                                      "non-negative number, got -0.5"));
  train.model = TrainConfig().model;
  train.moe.aux_loss_alpha = 0.001;
  CHECK_THROWS_WITH(train.validate(), Catch::Contains("moe.aux_loss_alpha needs a model with "
                                                      "routed experts"));
  fs::remove_all(dir);
}

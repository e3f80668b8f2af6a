#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/core/deferred_tensor.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/model/llama.h"
#include "deepseek_train/model/model_config.h"

using namespace dst;

namespace {
ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 300;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  return c;
}
}  // namespace

TEST_CASE("model: Hugging Face parameter names and shapes", "[model]") {
  ModelConfig c = tiny_config();
  LlamaModel model(c);
  auto params = model->named_parameters();
  CHECK(params.contains("model.embed_tokens.weight"));
  CHECK(params.contains("model.layers.0.self_attn.q_proj.weight"));
  CHECK(params.contains("model.layers.1.mlp.down_proj.weight"));
  CHECK(params.contains("model.layers.1.post_attention_layernorm.weight"));
  CHECK(params.contains("model.norm.weight"));
  CHECK(params.contains("lm_head.weight"));
  CHECK(params["model.layers.0.self_attn.k_proj.weight"].sizes() == torch::IntArrayRef({16, 32}));
  CHECK(params["model.layers.0.mlp.gate_proj.weight"].sizes() == torch::IntArrayRef({64, 32}));
  int64_t total = 0;
  for (const auto& p : model->parameters()) total += p.numel();
  CHECK(total == c.num_parameters());

  // Built without memory behind the projections (core/deferred_tensor.h) until initialised.
  CHECK(is_deferred(params["model.layers.0.self_attn.q_proj.weight"]));
  const auto ids = torch::randint(0, c.vocab_size, {3, 7}, torch::kInt64);
  CHECK_THROWS_WITH(model->forward(ids), Catch::Contains("call initialize(seed)"));
  model->initialize(5);
  CHECK_FALSE(is_deferred(params["model.layers.0.self_attn.q_proj.weight"]));
  auto logits = model->forward(ids);
  CHECK(logits.sizes() == torch::IntArrayRef({3, 7, c.vocab_size}));

  c.tie_word_embeddings = true;
  LlamaModel tied(c);
  CHECK_FALSE(tied->named_parameters().contains("lm_head.weight"));
  int64_t tied_total = 0;
  for (const auto& p : tied->parameters()) tied_total += p.numel();
  CHECK(tied_total == c.num_parameters());
}

TEST_CASE("model: initialisation is deterministic from the seed", "[model]") {
  LlamaModel a(tiny_config()), b(tiny_config()), c(tiny_config());
  a->initialize(7);
  b->initialize(7);
  c->initialize(8);
  auto pa = a->parameters(), pb = b->parameters(), pc = c->parameters();
  bool any_differs = false;
  for (size_t i = 0; i < pa.size(); ++i) {
    CHECK(torch::equal(pa[i], pb[i]));
    if (pa[i].dim() > 1) any_differs = any_differs || !torch::equal(pa[i], pc[i]);
  }
  CHECK(any_differs);
  CHECK(torch::equal(a->norm->weight, torch::ones({32})));
  const double std = a->embed_tokens->weight.std().item<double>();
  CHECK(std == Approx(0.02).epsilon(0.1));
}

TEST_CASE("model: causal — future tokens do not change earlier logits", "[model]") {
  LlamaModel model(tiny_config());
  model->initialize(1);
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(0, 300, {2, 10}, torch::kInt64);
  auto changed = ids.clone();
  changed.index_put_({torch::indexing::Slice(), torch::indexing::Slice(6, 10)},
                     torch::randint(0, 300, {2, 4}, torch::kInt64));
  auto a = model->forward(ids), b = model->forward(changed);
  using torch::indexing::Slice;
  CHECK(torch::allclose(a.index({Slice(), Slice(0, 6)}), b.index({Slice(), Slice(0, 6)}), 0, 0));
  CHECK_FALSE(torch::allclose(a.index({Slice(), Slice(6, 10)}), b.index({Slice(), Slice(6, 10)})));
}

TEST_CASE("model: incremental decoding with a key/value cache equals the full forward", "[model]") {
  LlamaModel model(tiny_config());
  model->initialize(3);
  torch::NoGradGuard no_grad;
  const auto ids = torch::randint(0, 300, {2, 12}, torch::kInt64);
  const auto full = model->forward(ids);
  // A prompt of 5 tokens, then 3, then one at a time: each step's logits are those of the full
  // forward at the same positions (the fused training kernels and the cached path agree).
  KeyValueCache cache;
  std::vector<torch::Tensor> parts;
  int64_t at = 0;
  for (int64_t length : {5, 3, 1, 1, 1, 1}) {
    parts.push_back(model->forward_incremental(ids.narrow(1, at, length), cache));
    at += length;
    CHECK(cache.tokens == at);
    CHECK(cache.layers.at(0).length() == at);
  }
  const auto incremental = torch::cat(parts, 1);
  CHECK(torch::allclose(incremental, full, 1e-5, 1e-5));
  // Past max_position_embeddings is a one-line error.
  CHECK_THROWS_WITH(model->forward_incremental(torch::zeros({2, 60}, torch::kInt64), cache),
                    Catch::Contains("exceeds max_position_embeddings 64"));
}

TEST_CASE("model: GQA equals MHA with each kv head repeated over its query group", "[model]") {
  ModelConfig gqa_config = tiny_config();  // 4 heads, 2 kv heads
  ModelConfig mha_config = gqa_config;
  mha_config.num_key_value_heads = 4;
  LlamaModel gqa(gqa_config), mha(mha_config);
  gqa->initialize(3);
  mha->initialize(3);
  torch::NoGradGuard no_grad;
  const int64_t head_dim = gqa_config.head_dim();
  for (const auto& item : mha->named_parameters()) {
    torch::Tensor source = gqa->named_parameters()[item.key()];
    if (item.key().find("k_proj") != std::string::npos ||
        item.key().find("v_proj") != std::string::npos) {
      // [kv_heads * d, hidden] -> repeat each head's rows for the 2 query heads it serves.
      source = source.view({2, head_dim, -1}).repeat_interleave(2, 0).reshape({4 * head_dim, -1});
    }
    item.value().copy_(source);
  }
  auto ids = torch::randint(0, 300, {2, 9}, torch::kInt64);
  CHECK(torch::allclose(gqa->forward(ids), mha->forward(ids), 1e-5, 1e-6));
}

TEST_CASE("model: RoPE follows the rotate_half convention (hand-computed)", "[model]") {
  // head_dim 4, theta 100: inv_freq = [1, 100^-0.5 = 0.1]; position 1 angles [1, 0.1, 1, 0.1].
  auto x = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({1, 1, 1, 4}).repeat({1, 1, 2, 1});
  auto y = apply_rotary(x, 100.0);
  // Position 0: unchanged.
  CHECK(torch::allclose(y[0][0][0], x[0][0][0]));
  // Position 1: x*cos + [-x3, -x4, x1, x2]*sin.
  const double c1 = std::cos(1.0), s1 = std::sin(1.0), c2 = std::cos(0.1), s2 = std::sin(0.1);
  auto expected =
      torch::tensor({static_cast<float>(1 * c1 - 3 * s1), static_cast<float>(2 * c2 - 4 * s2),
                     static_cast<float>(3 * c1 + 1 * s1), static_cast<float>(4 * c2 + 2 * s2)});
  CHECK(torch::allclose(y[0][0][1], expected, 1e-5, 1e-6));
}

TEST_CASE("model: cross-entropy sum ignores -100 labels", "[model]") {
  auto logits = torch::randn({2, 3, 5});
  const int64_t x = kIgnoreIndex;
  auto labels = torch::tensor({int64_t{1}, x, int64_t{4}, int64_t{0}, int64_t{2}, x}).view({2, 3});
  auto loss = cross_entropy_sum(logits, labels);
  auto logp = torch::log_softmax(logits, -1);
  double expected = -(logp[0][0][1] + logp[0][2][4] + logp[1][0][0] + logp[1][1][2]).item<double>();
  CHECK(loss.item<double>() == Approx(expected).epsilon(1e-6));
  CHECK(count_target_tokens(labels) == 4);
}

TEST_CASE("model: config validation names the field", "[model]") {
  ModelConfig c = tiny_config();
  c.num_key_value_heads = 3;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("num_key_value_heads"));
  c = tiny_config();
  c.hidden_size = 30;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("model.hidden_size (30)"));
}

TEST_CASE("model: config.json of another family or with unimplemented fields is refused",
          "[model]") {
  const auto read = [](const std::string& extra) {
    return model_config_from_hf_json_text(
        R"({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4)" + extra + "}",
        "m/config.json");
  };
  // Plain values of the Llama options, a null rope_scaling and transformers v5's rope_parameters.
  CHECK(read(R"(, "rope_scaling": null, "attention_bias": false, "mlp_bias": false,
                "hidden_act": "silu", "attention_dropout": 0.0, "head_dim": 16)")
            .hidden_size == 64);
  CHECK(
      read(R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0})").rope_theta ==
      500000.0);
  // No model_type: the architectures say which family; neither (older files of ours) is Llama.
  CHECK(model_config_from_hf_json_text(R"({"architectures": ["LlamaForCausalLM"]})", "a.json")
            .vocab_size > 0);
  CHECK(model_config_from_hf_json_text("{}", "a.json").vocab_size > 0);

  const auto refused = [](const std::function<void()>& read_config) {
    try {
      read_config();
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  // A Qwen2-MoE config.json (abridged from the Hub) must not load as a wrong Llama.
  CHECK_THAT(refused([] {
               model_config_from_hf_json_text(
                   R"({"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
                       "hidden_size": 2048, "num_attention_heads": 16, "num_experts": 60})",
                   "q/config.json");
             }),
             Catch::StartsWith("q/config.json: field 'model_type' is 'qwen2_moe', which no "
                               "model family here implements (known: llama"));
  CHECK_THAT(refused([] {
               model_config_from_hf_json_text(R"({"architectures": ["MistralForCausalLM"]})",
                                              "m.json");
             }),
             Catch::StartsWith("m.json: field 'architectures' names \"MistralForCausalLM\""));
  const std::vector<std::pair<std::string, std::string>> unimplemented = {
      {R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0})", "rope_scaling"},
      {R"("rope_parameters": {"rope_type": "yarn", "factor": 4.0})", "rope_parameters"},
      {R"("attention_bias": true)", "attention_bias"},
      {R"("mlp_bias": true)", "mlp_bias"},
      {R"("hidden_act": "gelu")", "hidden_act"},
      {R"("attention_dropout": 0.1)", "attention_dropout"},
      {R"("head_dim": 32)", "head_dim"},
  };
  for (const auto& [field, key] : unimplemented) {
    INFO(field);
    const std::string message = refused([&, field = field] { read(", " + field); });
    CHECK_THAT(message, Catch::StartsWith("m/config.json: field '" + key + "' = ") &&
                            Catch::Contains("is not implemented"));
    CHECK(message.find('\n') == std::string::npos);
  }
}

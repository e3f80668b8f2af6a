// Prefix tuning: per-layer learned keys/values, optionally from PEFT's reparameterisation MLP.
#include "deepseek_train/adapters/prefix_tuning.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "deepseek_train/core/error.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"

namespace dst {

namespace {

std::string layer_prefix(int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".self_attn.prefix.";
}

// Learned keys and values held by the layer itself.
class DirectPrefixImpl final : public KeyValuePrefix {
 public:
  DirectPrefixImpl(int64_t layer, int64_t nvt, int64_t kv_heads, int64_t local_kv_heads,
                   int64_t head_dim, int tp_rank, uint64_t seed) {
    // PEFT initialises the prefix embedding N(0, 1); the full tensor per layer is drawn from a
    // generator of its own and this rank keeps its kv heads.
    auto draw = [&](const char* what) {
      auto generator =
          at::detail::createCPUGenerator(parameter_seed(seed, layer_prefix(layer) + what));
      torch::Tensor full = torch::empty({nvt, kv_heads, head_dim}, torch::kFloat32);
      full.normal_(0.0, 1.0, generator);
      return full.narrow(1, tp_rank * local_kv_heads, local_kv_heads).clone();
    };
    key = register_parameter("key", draw("key"));
    value = register_parameter("value", draw("value"));
  }
  std::pair<torch::Tensor, torch::Tensor> key_value() override { return {key, value}; }
  int64_t num_virtual_tokens() const override { return key.size(0); }
  bool visible() const override { return visible_; }
  void set_visible(bool visible) { visible_ = visible; }
  torch::Tensor key, value;

 private:
  bool visible_ = true;
};

// Keys and values computed by the shared encoder (its rows for this layer only).
class ProjectedPrefixImpl final : public KeyValuePrefix {
 public:
  ProjectedPrefixImpl(PrefixEncoder encoder, int64_t layer, int64_t nvt, int64_t kv_heads,
                      int64_t local_kv_heads, int64_t head_dim, comm::CommunicatorPtr tp)
      : encoder_(std::move(encoder)),
        layer_(layer),
        nvt_(nvt),
        kv_heads_(kv_heads),
        local_kv_heads_(local_kv_heads),
        head_dim_(head_dim),
        tp_(tp && tp->size() > 1 ? std::move(tp) : nullptr) {}
  std::pair<torch::Tensor, torch::Tensor> key_value() override {
    const int64_t kv_dim = kv_heads_ * head_dim_;
    torch::Tensor columns = encoder_->columns(layer_ * 2 * kv_dim, 2 * kv_dim);
    // Each tp rank uses its heads only: sum the encoder's gradient over the group.
    if (tp_) columns = copy_to_tp_region(columns, *tp_);
    torch::Tensor kv = columns.view({nvt_, 2, kv_heads_, head_dim_});
    const int64_t first = tp_ ? tp_->rank() * local_kv_heads_ : 0;
    kv = kv.narrow(2, first, local_kv_heads_);
    return {kv.select(1, 0), kv.select(1, 1)};
  }
  int64_t num_virtual_tokens() const override { return nvt_; }
  bool visible() const override { return visible_; }
  void set_visible(bool visible) { visible_ = visible; }

 private:
  PrefixEncoder encoder_;
  int64_t layer_, nvt_, kv_heads_, local_kv_heads_, head_dim_;
  comm::CommunicatorPtr tp_;
  bool visible_ = true;
};

}  // namespace

PrefixTuningOptions PrefixTuningOptions::from_config(const AdapterConfig& c) {
  c.check_keys({"num_virtual_tokens", "projection", "projection.hidden"});
  PrefixTuningOptions o;
  o.num_virtual_tokens = c.integer_or("num_virtual_tokens", 0);
  DST_CHECK(o.num_virtual_tokens > 0, ConfigError,
            c.where << ".num_virtual_tokens must be a positive integer, got "
                    << c.string_or("num_virtual_tokens", "(missing)"));
  o.projection_hidden = c.integer_or("projection.hidden", 0);
  DST_CHECK(!c.has("projection") || c.has("projection.hidden"), ConfigError,
            c.where << ".projection: expected a mapping with 'hidden'");
  DST_CHECK(o.projection_hidden >= 0 && (!c.has("projection.hidden") || o.projection_hidden > 0),
            ConfigError, c.where << ".projection.hidden must be positive");
  return o;
}

PrefixEncoderImpl::PrefixEncoderImpl(int64_t nvt, int64_t hidden, int64_t encoder_hidden,
                                     int64_t output) {
  embedding = register_module("embedding", torch::nn::Embedding(nvt, hidden));
  first = register_module("transform_0", torch::nn::Linear(hidden, encoder_hidden));
  second = register_module("transform_2", torch::nn::Linear(encoder_hidden, output));
}

torch::Tensor PrefixEncoderImpl::columns(int64_t begin, int64_t length) {
  torch::Tensor h = torch::tanh(first(embedding->weight));
  return torch::nn::functional::linear(h, second->weight.narrow(0, begin, length),
                                       second->bias.narrow(0, begin, length));
}

PrefixTuningAdapter::PrefixTuningAdapter(const AdapterConfig& config)
    : options_(PrefixTuningOptions::from_config(config)), where_(config.where) {}

void PrefixTuningAdapter::apply(CausalLM& model, uint64_t seed) {
  DST_CHECK(prefixes_.empty(), ConfigError, where_ << ": prefix tuning was already applied");
  // A family without key/value prefix sites (DeepSeek's MLA caches a latent, not per-head keys)
  // would train an encoder nothing uses.
  DST_CHECK(
      !model.key_value_prefix_sites().empty() || model.config().model_type == "llama", ConfigError,
      where_ << ": prefix tuning is not implemented for model type '" << model.config().model_type
             << "' (it has no key/value prefix sites); use LoRA");
  const ModelConfig& c = model.config();
  const int64_t nvt = options_.num_virtual_tokens;
  const int64_t head_dim = c.head_dim();
  const int64_t kv_dim = c.num_key_value_heads * head_dim;
  if (options_.projection_hidden > 0) {
    DST_CHECK(
        model.num_chunks() == 1 && model.chunks()[0].has_embedding && model.chunks()[0].has_head,
        ConfigError,
        where_ << ".projection is not supported with pipeline parallelism (the encoder "
                  "would be shared across stages); use prefix tuning without projection");
    encoder_ = PrefixEncoder(nvt, c.hidden_size, options_.projection_hidden,
                             c.num_hidden_layers * 2 * kv_dim);
    torch::NoGradGuard no_grad;
    // Deterministic initialisation as torch.nn defaults (N(0, 1) embedding, Kaiming-uniform
    // linear weights and biases within 1/sqrt(fan_in)), each from its own generator.
    for (auto& item : encoder_->named_parameters()) {
      auto generator = at::detail::createCPUGenerator(
          parameter_seed(seed, "model.prefix_encoder." + item.key()));
      torch::Tensor& p = item.value();
      if (item.key().rfind("embedding.", 0) == 0) {
        p.normal_(0.0, 1.0, generator);
      } else {
        const int64_t fan_in =
            item.key().rfind("transform_0", 0) == 0 ? c.hidden_size : options_.projection_hidden;
        const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
        p.uniform_(-bound, bound, generator);
      }
    }
    model.register_adapter_module("model.prefix_encoder", encoder_.ptr());
  }
  for (const KeyValuePrefixSite& site : model.key_value_prefix_sites()) {
    const int64_t layer = site.layer;
    std::shared_ptr<KeyValuePrefix>& slot = *site.prefix;
    DST_CHECK(!slot, ConfigError, where_ << ": layer " << layer << " already has a prefix");
    if (encoder_) {
      slot = std::make_shared<ProjectedPrefixImpl>(encoder_, layer, nvt, site.kv_heads,
                                                   site.local_kv_heads, site.head_dim,
                                                   model.tp_group());
    } else {
      auto prefix = std::make_shared<DirectPrefixImpl>(
          layer, nvt, site.kv_heads, site.local_kv_heads, site.head_dim, model.tp_rank(), seed);
      const std::string name = layer_prefix(layer);  // "model.layers.<i>.self_attn.prefix."
      model.register_adapter_module(name.substr(0, name.size() - 1), prefix);
      slot = prefix;
      model.set_tp_split(name + "key", TpSplit::kDim1);
      model.set_tp_split(name + "value", TpSplit::kDim1);
    }
    prefixes_.push_back(slot);
  }
}

void PrefixTuningAdapter::set_visible(bool visible) {
  for (auto& prefix : prefixes_) {
    if (auto* direct = dynamic_cast<DirectPrefixImpl*>(prefix.get())) direct->set_visible(visible);
    if (auto* projected = dynamic_cast<ProjectedPrefixImpl*>(prefix.get()))
      projected->set_visible(visible);
  }
}

PeftAdapterFiles PrefixTuningAdapter::peft_files(const std::map<std::string, at::Tensor>& full,
                                                 const ModelConfig& c) const {
  torch::NoGradGuard no_grad;
  const int64_t nvt = options_.num_virtual_tokens;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim();
  const int64_t layers = c.num_hidden_layers;
  torch::Tensor embeddings;
  if (options_.projection_hidden > 0) {
    PrefixEncoder encoder(nvt, c.hidden_size, options_.projection_hidden, layers * 2 * kv_dim);
    for (auto& item : encoder->named_parameters()) {
      auto found = full.find("model.prefix_encoder." + item.key());
      DST_CHECK(found != full.end(), ConfigError,
                where_ << ": export: tensor 'model.prefix_encoder." << item.key() << "' missing");
      item.value().copy_(found->second);
    }
    embeddings = encoder->columns(0, layers * 2 * kv_dim);
  } else {
    // PEFT's layout: per virtual token, layer-major, key before value, heads then head_dim.
    std::vector<torch::Tensor> parts;
    for (int64_t layer = 0; layer < layers; ++layer) {
      for (const char* what : {"key", "value"}) {
        auto found = full.find(layer_prefix(layer) + what);
        DST_CHECK(found != full.end(), ConfigError,
                  where_ << ": export: tensor '" << layer_prefix(layer) << what << "' missing");
        parts.push_back(found->second.to(torch::kFloat32).reshape({nvt, kv_dim}));
      }
    }
    embeddings = torch::cat(parts, 1);
  }
  PeftAdapterFiles files;
  files.tensors.emplace_back("prompt_embeddings", embeddings.contiguous());
  nlohmann::json config;
  config["peft_type"] = "PREFIX_TUNING";
  config["task_type"] = "CAUSAL_LM";
  config["num_virtual_tokens"] = nvt;
  // PEFT sizes the prefix by key/value heads for grouped-query models.
  config["token_dim"] = kv_dim;
  config["num_attention_heads"] = c.num_key_value_heads;
  config["num_layers"] = layers;
  config["num_transformer_submodules"] = 1;
  config["prefix_projection"] = false;
  config["encoder_hidden_size"] =
      options_.projection_hidden > 0 ? options_.projection_hidden : c.hidden_size;
  config["inference_mode"] = true;
  config["base_model_name_or_path"] = nullptr;
  files.config_json = config.dump(2) + "\n";
  return files;
}

}  // namespace dst

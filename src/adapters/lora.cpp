// LoRA adapters: creation on matching projections, tp-aware forward, merge, PEFT export.
#include "deepseek_train/adapters/lora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <regex>

#include "deepseek_train/core/error.h"
#include "deepseek_train/privacy/per_example_tap.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"

namespace dst {

namespace F = torch::nn::functional;

namespace {

constexpr const char* kPeftPrefix = "base_model.model.";

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string a_name(const std::string& module) { return module + ".lora_A.weight"; }
std::string b_name(const std::string& module) { return module + ".lora_B.weight"; }

}  // namespace

LoraOptions LoraOptions::from_config(const AdapterConfig& c) {
  c.check_keys(
      {"r", "alpha", "lora_alpha", "dropout", "lora_dropout", "target_modules", "use_rslora"});
  LoraOptions o;
  o.r = c.integer_or("r", o.r);
  o.alpha = c.number_or("alpha", c.number_or("lora_alpha", o.alpha));
  o.dropout = c.number_or("dropout", c.number_or("lora_dropout", o.dropout));
  o.use_rslora = c.boolean_or("use_rslora", o.use_rslora);
  if (c.is_list("target_modules")) {
    o.target_modules = c.list_or("target_modules", {});
    DST_CHECK(!o.target_modules.empty(), ConfigError,
              c.where << ".target_modules: the list is empty");
  } else if (c.has("target_modules")) {
    o.target_regex = c.string_or("target_modules", "");
    o.target_modules.clear();
    try {
      std::regex check(o.target_regex);
    } catch (const std::regex_error& e) {
      DST_THROW(ConfigError, c.where << ".target_modules: '" << o.target_regex
                                     << "' is not a valid regular expression (" << e.what() << ")");
    }
  }
  DST_CHECK(o.r > 0, ConfigError, c.where << ".r must be positive, got " << o.r);
  DST_CHECK(o.alpha > 0, ConfigError, c.where << ".alpha must be positive, got " << o.alpha);
  DST_CHECK(o.dropout >= 0 && o.dropout < 1, ConfigError,
            c.where << ".dropout must be in [0, 1), got " << o.dropout);
  return o;
}

double LoraOptions::scaling() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

bool LoraOptions::targets(const std::string& module_name) const {
  if (!target_regex.empty()) return std::regex_match(module_name, std::regex(target_regex));
  for (const std::string& target : target_modules)
    if (module_name == target || ends_with(module_name, "." + target)) return true;
  return false;
}

LoraLinearImpl::LoraLinearImpl(const ProjectionSite& site, const LoraOptions& options,
                               comm::CommunicatorPtr tp_group, uint64_t seed)
    : site_(site),
      tp_(tp_group && tp_group->size() > 1 ? std::move(tp_group) : nullptr),
      scaling_(options.scaling()),
      dropout_(options.dropout) {
  const int tp = tp_ ? tp_->size() : 1;
  const int tp_rank = tp_ ? tp_->rank() : 0;
  const int64_t r = options.r;
  // Column-parallel base: B holds this rank's output rows. Row-parallel: A its input columns.
  const int64_t a_in = site.split == TpSplit::kDim1 ? site.in_features / tp : site.in_features;
  const int64_t b_out = site.split == TpSplit::kDim0 ? site.out_features / tp : site.out_features;
  lora_A = torch::nn::Linear(torch::nn::LinearOptions(a_in, r).bias(false));
  lora_B = torch::nn::Linear(torch::nn::LinearOptions(r, b_out).bias(false));
  torch::NoGradGuard no_grad;
  // PEFT: kaiming_uniform_(A, a=sqrt(5)) -> U(-1/sqrt(fan_in), 1/sqrt(fan_in)); B = 0. The full A
  // is drawn from a generator of its own and sliced, so every layout starts identical.
  auto generator = at::detail::createCPUGenerator(parameter_seed(seed, a_name(site.name)));
  const double bound = 1.0 / std::sqrt(static_cast<double>(site.in_features));
  torch::Tensor full_a = torch::empty({r, site.in_features}, torch::kFloat32);
  full_a.uniform_(-bound, bound, generator);
  lora_A->weight.copy_(site.split == TpSplit::kDim1 ? full_a.narrow(1, tp_rank * a_in, a_in)
                                                    : full_a);
  lora_B->weight.zero_();
  site_.linear->register_module("lora_A", lora_A);
  site_.linear->register_module("lora_B", lora_B);
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& input, const torch::Tensor& base) {
  if (merged_) return base;
  const at::ScalarType dtype = input.scalar_type();
  torch::Tensor a = lora_A->weight.to(dtype), b = lora_B->weight.to(dtype);
  // The factor replicated across tp gets partial gradients on each rank: sum them.
  if (tp_) {
    if (site_.split == TpSplit::kDim0) a = copy_to_tp_region(a, *tp_);
    if (site_.split == TpSplit::kDim1) b = copy_to_tp_region(b, *tp_);
  }
  const bool training = lora_A->is_training();
  torch::Tensor x = dropout_ > 0
                        ? F::dropout(input, F::DropoutFuncOptions().p(dropout_).training(training))
                        : input;
  const torch::Tensor down = F::linear(x, a);
  const torch::Tensor up = F::linear(down, b);
  if (PerExampleGradientTap* tap = active_per_example_tap()) {
    tap->linear(lora_A->weight, x, down);
    tap->linear(lora_B->weight, down, up);
  }
  return base + up * scaling_;
}

torch::Tensor LoraLinearImpl::delta_weight() const {
  return torch::matmul(lora_B->weight.to(torch::kFloat32), lora_A->weight.to(torch::kFloat32)) *
         scaling_;
}

void LoraLinearImpl::merge() {
  if (merged_) return;
  torch::NoGradGuard no_grad;
  torch::Tensor& w = site_.linear->weight;
  w.copy_((w.to(torch::kFloat32) + delta_weight()).to(w.scalar_type()));
  merged_ = true;
}

void LoraLinearImpl::unmerge() {
  if (!merged_) return;
  torch::NoGradGuard no_grad;
  torch::Tensor& w = site_.linear->weight;
  w.copy_((w.to(torch::kFloat32) - delta_weight()).to(w.scalar_type()));
  merged_ = false;
}

LoraAdapter::LoraAdapter(const AdapterConfig& config)
    : options_(LoraOptions::from_config(config)), where_(config.where) {}

void LoraAdapter::apply(CausalLM& model, uint64_t seed) {
  DST_CHECK(modules_.empty(), ConfigError, where_ << ": the LoRA adapter was already applied");
  for (ProjectionSite& site : model.projection_sites()) {
    if (!options_.targets(site.name)) continue;
    DST_CHECK(!*site.adapter, ConfigError,
              where_ << ": module '" << site.name << "' already has an adapter");
    LoraLinear module(site, options_, model.tp_group(), seed);
    if (site.split == TpSplit::kDim0) model.set_tp_split(b_name(site.name), TpSplit::kDim0);
    if (site.split == TpSplit::kDim1) model.set_tp_split(a_name(site.name), TpSplit::kDim1);
    *site.adapter = module.ptr();
    modules_.push_back(module);
    module_names_.push_back(site.name);
  }
  // A pipeline stage may hold no matching layer; the recipe is wrong only when no rank does,
  // which the trainer checks (it knows every stage).
}

void LoraAdapter::merge() {
  for (LoraLinear& m : modules_) m->merge();
}

void LoraAdapter::unmerge() {
  for (LoraLinear& m : modules_) m->unmerge();
}

bool LoraAdapter::merge_into(std::map<std::string, at::Tensor>& full) const {
  torch::NoGradGuard no_grad;
  std::vector<std::string> modules;
  for (const auto& item : full)
    if (ends_with(item.first, ".lora_A.weight"))
      modules.push_back(item.first.substr(0, item.first.size() - 14));
  for (const std::string& module : modules) {
    auto a = full.find(a_name(module)), b = full.find(b_name(module));
    auto w = full.find(module + ".weight");
    DST_CHECK(b != full.end() && w != full.end(), CheckpointError,
              "LoRA merge: '" << module << "' lacks lora_B or its base weight");
    const torch::Tensor delta =
        torch::matmul(b->second.to(torch::kFloat32), a->second.to(torch::kFloat32)) *
        options_.scaling();
    w->second = (w->second.to(torch::kFloat32) + delta).to(w->second.scalar_type());
    full.erase(a);
    full.erase(b);
  }
  return true;
}

PeftAdapterFiles LoraAdapter::peft_files(const std::map<std::string, at::Tensor>& full,
                                         const ModelConfig& /*config*/) const {
  PeftAdapterFiles files;
  for (const auto& [name, tensor] : full)
    if (name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos)
      files.tensors.emplace_back(kPeftPrefix + name, tensor.contiguous());
  DST_CHECK(!files.tensors.empty(), ConfigError,
            where_ << ": LoRA export: the model holds no LoRA tensors");
  nlohmann::json config;
  config["peft_type"] = "LORA";
  config["task_type"] = "CAUSAL_LM";
  config["r"] = options_.r;
  config["lora_alpha"] = options_.alpha;
  config["lora_dropout"] = options_.dropout;
  if (options_.target_regex.empty()) {
    config["target_modules"] = options_.target_modules;
  } else {
    config["target_modules"] = options_.target_regex;
  }
  config["bias"] = "none";
  config["use_rslora"] = options_.use_rslora;
  config["fan_in_fan_out"] = false;
  config["inference_mode"] = true;
  config["init_lora_weights"] = true;
  config["modules_to_save"] = nullptr;
  config["base_model_name_or_path"] = nullptr;
  config["use_dora"] = false;
  config["layers_to_transform"] = nullptr;
  config["layers_pattern"] = nullptr;
  config["rank_pattern"] = nlohmann::json::object();
  config["alpha_pattern"] = nlohmann::json::object();
  files.config_json = config.dump(2) + "\n";
  return files;
}

}  // namespace dst

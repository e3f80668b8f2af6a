#include "deepseek_train/privacy/per_example_tap.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <set>

#include "deepseek_train/core/error.h"
#include "deepseek_train/privacy/per_example_norms.h"

namespace dst {

namespace {

thread_local PerExampleGradientTap* active_tap = nullptr;

// Half-precision activations are widened so the norms keep fp32 accuracy.
at::Tensor widened(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf ? t.to(at::kFloat) : t;
}

}  // namespace

PerExampleGradientTap* active_per_example_tap() { return active_tap; }

PerExampleTapScope::PerExampleTapScope(PerExampleGradientTap* tap) : previous_(active_tap) {
  active_tap = tap;
}

PerExampleTapScope::~PerExampleTapScope() { active_tap = previous_; }

PerExampleGradientTap::PerExampleGradientTap(
    const std::vector<std::pair<std::string, at::Tensor>>& trainable) {
  for (const auto& [name, tensor] : trainable) names_.emplace(tensor.unsafeGetTensorImpl(), name);
}

void PerExampleGradientTap::add(Kind kind, const at::Tensor& parameter, const at::Tensor& input,
                                const at::Tensor& output) {
  if (!output.requires_grad()) return;  // no gradient wanted (evaluation, a no-grad forward)
  const void* key = parameter.unsafeGetTensorImpl();
  if (names_.count(key) == 0) return;  // frozen
  const int64_t input_dims = kind == Kind::kEmbedding ? 2 : 3;
  if (input.defined() && input.dim() != input_dims) {
    unsupported_.insert(key);  // no example dimension: refused in squared_norms
    return;
  }
  records_.push_back({kind, key, input.defined() ? input.detach() : at::Tensor(), output});
}

void PerExampleGradientTap::linear(const at::Tensor& weight, const at::Tensor& input,
                                   const at::Tensor& output) {
  add(Kind::kLinear, weight, input, output);
}

void PerExampleGradientTap::embedding(const at::Tensor& weight, const at::Tensor& ids,
                                      const at::Tensor& output) {
  add(Kind::kEmbedding, weight, ids, output);
}

void PerExampleGradientTap::scale(const at::Tensor& weight, const at::Tensor& normalized,
                                  const at::Tensor& output) {
  add(Kind::kScale, weight, normalized, output);
}

void PerExampleGradientTap::broadcast(const at::Tensor& parameter, const at::Tensor& expanded) {
  add(Kind::kBroadcast, parameter, at::Tensor(), expanded);
}

at::Tensor PerExampleGradientTap::record_sq_norms(const Record& record,
                                                  const at::Tensor& output_grad) {
  const at::Tensor g = widened(output_grad);
  switch (record.kind) {
    case Kind::kLinear:
      return linear_weight_per_example_sq_norms(widened(record.input), g);
    case Kind::kEmbedding:
      return embedding_per_example_sq_norms(record.input, g);
    case Kind::kScale:
      return scale_per_example_sq_norms(widened(record.input), g);
    case Kind::kBroadcast:
      return g.reshape({g.size(0), -1}).pow(2).sum(1);
  }
  return at::Tensor();
}

at::Tensor PerExampleGradientTap::squared_norms(const at::Tensor& loss, int64_t examples) {
  std::vector<Record> records = std::move(records_);
  records_.clear();
  const std::set<const void*> unsupported = std::move(unsupported_);
  unsupported_.clear();
  for (const void* key : unsupported)
    DST_THROW(ConfigError,
              "privacy: trainable parameter '"
                  << names_.at(key)
                  << "' is used on rows without an example dimension (tokens gathered across "
                     "examples, as MoE experts see them); DP-SGD cannot bound its per-example "
                     "gradient: freeze it or train an adapter");
  std::set<const void*> reported;
  for (const Record& record : records) {
    DST_CHECK(reported.insert(record.parameter).second, ConfigError,
              "privacy: parameter '"
                  << names_.at(record.parameter)
                  << "' is used twice in one forward (a tied embedding that "
                     "trains, or activation checkpointing); DP-SGD's "
                     "per-example norms need each trainable parameter used once");
  }
  for (const auto& [key, name] : names_)
    DST_CHECK(reported.count(key) > 0, ConfigError,
              "privacy: no per-example gradient norm for trainable parameter '"
                  << name
                  << "' (DP-SGD supports linear, embedding, RMSNorm, LoRA and prefix "
                     "parameters; freeze it or train an adapter)");
  at::Tensor total = at::zeros({examples}, at::TensorOptions().dtype(at::kDouble));
  if (records.empty()) return total;
  std::vector<at::Tensor> outputs;
  for (const Record& record : records) outputs.push_back(record.output);
  const std::vector<at::Tensor> grads =
      torch::autograd::grad({loss}, outputs, /*grad_outputs=*/{}, /*retain_graph=*/false,
                            /*create_graph=*/false, /*allow_unused=*/true);
  for (size_t i = 0; i < records.size(); ++i) {
    if (!grads[i].defined()) continue;  // the output did not reach the loss
    const at::Tensor sq = record_sq_norms(records[i], grads[i]);
    DST_CHECK(sq.dim() == 1 && sq.size(0) == examples, ConfigError,
              "privacy: the per-example norms of '" << names_.at(records[i].parameter) << "' cover "
                                                    << sq.sizes() << " examples, expected "
                                                    << examples);
    total += sq.to(at::kDouble);
  }
  return total;
}

}  // namespace dst

// Per-example gradient norms of a whole model in one extra backward ("ghost clipping"): while a
// PerExampleTapScope is active on a thread, the layers of the model report each use of a
// trainable parameter together with what its per-example gradient norm follows from (a linear
// layer's input and output, an embedding's ids and output, an RMSNorm's normalised input and
// output, a prefix broadcast over the batch). squared_norms() then differentiates the loss with
// respect to those outputs only — no parameter gradient is formed, no engine hook runs — and
// adds up per_example_norms.h's exact per-layer terms.
//
// The active tap is a per-thread mode, like autograd's grad mode: a scope sets it, its end
// restores the previous one, and layers ask active_per_example_tap() (null when none).
// Per-example gradients require that examples do not interact (true of these models' rows) and
// that each trainable parameter is used once per forward (a tied embedding trained in both
// places, or activation checkpointing's recompute, is refused with a ConfigError).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace dst {

class PerExampleGradientTap {
 public:
  // The parameters whose gradients are clipped (every trainable one), by name; others are
  // ignored when layers report them.
  explicit PerExampleGradientTap(const std::vector<std::pair<std::string, at::Tensor>>& trainable);

  // Reports from the layers; `weight` is the parameter itself. Ignored: outputs that do not
  // require a gradient, and inputs not shaped [examples, positions, features] (ids [examples,
  // positions]) — rows of tokens gathered across examples (MoE experts) have no example
  // dimension, so a trainable parameter used there is refused by squared_norms.
  void linear(const at::Tensor& weight, const at::Tensor& input, const at::Tensor& output);
  void embedding(const at::Tensor& weight, const at::Tensor& ids, const at::Tensor& output);
  // y = normalized ∘ weight (RMSNorm).
  void scale(const at::Tensor& weight, const at::Tensor& normalized, const at::Tensor& output);
  // `expanded` [examples, ...] holds, for each example, the parameter's values as it used them
  // (a permuted, cast, broadcast view): its gradient's row i is example i's gradient.
  void broadcast(const at::Tensor& parameter, const at::Tensor& expanded);

  // Each example's squared gradient norm over every trainable parameter, fp64 [examples], of
  // `loss` (a sum of per-example losses over the forward the layers reported). Clears the
  // records. ConfigError naming the parameter when a trainable parameter was not reported (its
  // layer type has no per-example norm) or reported twice.
  at::Tensor squared_norms(const at::Tensor& loss, int64_t examples);

 private:
  enum class Kind { kLinear, kEmbedding, kScale, kBroadcast };
  struct Record {
    Kind kind;
    const void* parameter;
    at::Tensor input;  // the input, ids, or normalised input (undefined for kBroadcast)
    at::Tensor output;
  };
  void add(Kind kind, const at::Tensor& parameter, const at::Tensor& input,
           const at::Tensor& output);
  static at::Tensor record_sq_norms(const Record& record, const at::Tensor& output_grad);
  std::map<const void*, std::string> names_;  // trainable parameters by TensorImpl
  std::vector<Record> records_;
  std::set<const void*> unsupported_;  // trainable parameters used without an example dimension
};

// The tap layers report to on this thread (null: none).
PerExampleGradientTap* active_per_example_tap();

// Makes `tap` the active one on this thread for the scope's lifetime.
class PerExampleTapScope {
 public:
  explicit PerExampleTapScope(PerExampleGradientTap* tap);
  ~PerExampleTapScope();
  PerExampleTapScope(const PerExampleTapScope&) = delete;
  PerExampleTapScope& operator=(const PerExampleTapScope&) = delete;

 private:
  PerExampleGradientTap* previous_;
};

}  // namespace dst

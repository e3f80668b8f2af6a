#include "dp_sgd.h"

#include <ATen/ATen.h>

#include <mutex>
#include <random>

#include "deepseek_train/core/device.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/model/causal_lm.h"
#include "deepseek_train/privacy/dp_noise.h"
#include "deepseek_train/privacy/per_example_tap.h"

namespace dst {

namespace {

// Adds the noise of elements [first, first + numel) to a gradient slice of any float dtype.
void add_noise_to(at::Tensor gradient, double stddev, uint64_t key, int64_t first) {
  if (gradient.scalar_type() == at::kFloat && gradient.is_contiguous()) {
    add_dp_noise(gradient.data_ptr<float>(), gradient.numel(), stddev, key, first);
    return;
  }
  at::Tensor widened = gradient.to(at::kFloat).contiguous();
  add_dp_noise(widened.data_ptr<float>(), widened.numel(), stddev, key, first);
  gradient.copy_(widened);
}

// The parameters DP-SGD clips: every trainable one.
std::vector<std::pair<std::string, at::Tensor>> trainable_parameters(CausalLM& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true))
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace

DpSgd::DpSgd(PrivacyOptions options, uint64_t key) : options_(std::move(options)), key_(key) {
  options_.validate();
  DST_CHECK(options_.enabled(), ConfigError, "privacy: DP-SGD needs privacy.max_grad_norm");
}

void DpSgd::plan(double sample_rate, double expected_batch, int64_t total_steps) {
  DST_CHECK(sample_rate > 0 && sample_rate <= 1, ConfigError,
            "privacy: the sampling rate " << sample_rate
                                          << " (expected batch / dataset size) must be in (0, 1]");
  DST_CHECK(expected_batch > 0, ConfigError, "privacy: the expected batch must be positive");
  sample_rate_ = sample_rate;
  expected_batch_ = expected_batch;
  const int64_t remaining = total_steps - accountant_.steps();
  noise_multiplier_ = options_.target_epsilon > 0 && remaining > 0
                          ? noise_multiplier_for_epsilon(options_.target_epsilon, options_.delta,
                                                         sample_rate, remaining, 0.01, accountant_)
                      : options_.noise_multiplier > 0 ? options_.noise_multiplier
                      : !history_.empty()             ? history_.back().noise_multiplier
                                                      : noise_multiplier_;
}

void DpSgd::restore_history(const std::vector<PrivacySegment>& history) {
  accountant_ = RdpAccountant();
  history_.clear();
  for (const PrivacySegment& segment : history) {
    accountant_.step(segment.noise_multiplier, segment.sample_rate, segment.steps);
    history_.push_back(segment);
  }
}

std::pair<at::Tensor, double> DpSgd::row_losses(const CausalLM& model, const at::Tensor& logits,
                                                const at::Tensor& labels) {
  std::vector<at::Tensor> means;
  double token_loss_sum = 0.0;
  for (int64_t row = 0; row < logits.size(0); ++row) {
    const at::Tensor row_labels = labels.narrow(0, row, 1);
    const at::Tensor sum = model.loss_sum(logits.narrow(0, row, 1), row_labels);
    token_loss_sum += sum.item<double>();
    const int64_t tokens = count_target_tokens(row_labels);
    means.push_back(tokens > 0 ? sum / static_cast<double>(tokens) : sum * 0.0);
  }
  return {at::stack(means), token_loss_sum};
}

DpSgd::ExampleWeights DpSgd::example_weights(CausalLM& model, DataParallelEngine& engine,
                                             const MicroBatch& batch) {
  DST_CHECK(planned(), ConfigError,
            "privacy: DP-SGD needs Trainer::plan_privacy (sampling rate, expected batch) before "
            "the first train_step");
  PerExampleGradientTap tap(trainable_parameters(model));
  // Pass 2 replays pass 1's random draws (dropout), so both see the same per-example gradients.
  std::vector<at::Generator> generators = default_generators(batch.input_ids.device());
  std::vector<at::Tensor> rng_states;
  for (at::Generator& generator : generators) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    rng_states.push_back(generator.get_state());
  }
  UnitHooks* hooks = model.unit_hooks();
  engine.gather_parameters();
  model.set_unit_hooks(nullptr);
  at::Tensor squared;
  try {
    PerExampleTapScope scope(&tap);
    const at::Tensor logits = model.forward_chunk(0, batch.input_ids);
    squared = tap.squared_norms(row_losses(model, logits, batch.labels).first.sum(),
                                batch.input_ids.size(0));
  } catch (...) {
    model.set_unit_hooks(hooks);
    engine.release_parameters();
    throw;
  }
  model.set_unit_hooks(hooks);
  engine.release_parameters();
  for (size_t i = 0; i < generators.size(); ++i) {
    std::lock_guard<std::mutex> lock(generators[i].mutex());
    generators[i].set_state(rng_states[i]);
  }
  const at::Tensor norms = squared.sqrt();
  const at::Tensor clip = (options_.max_grad_norm / (norms + 1e-6)).clamp_max(1.0);
  const at::Tensor has_tokens = batch.labels.ne(kIgnoreIndex).any(1);
  ExampleWeights out;
  out.weights = (clip * has_tokens.to(at::kDouble) / expected_batch_).to(at::kFloat);
  out.examples = has_tokens.sum().item<int64_t>();
  out.clipped = (has_tokens & norms.gt(options_.max_grad_norm)).sum().item<int64_t>();
  return out;
}

std::pair<at::Tensor, double> DpSgd::weighted_loss(const CausalLM& model, const at::Tensor& logits,
                                                   const at::Tensor& labels,
                                                   const at::Tensor& weights) {
  auto [means, token_loss_sum] = row_losses(model, logits, labels);
  return {(means * weights).sum(), token_loss_sum};
}

PrivacyReport DpSgd::finish_step(std::vector<std::unique_ptr<DataParallelEngine>>& engines,
                                 int64_t step, int64_t examples, int64_t clipped) {
  const double stddev = noise_multiplier_ * options_.max_grad_norm / expected_batch_;
  for (auto& engine : engines) {
    for (const ParameterStateSlice& slice : engine->state_slices()) {
      DST_CHECK(slice.gradient.defined(), ConfigError,
                "privacy: parameter '" << slice.name
                                       << "' has no gradient this step (unused by the model?); "
                                          "DP-SGD must add noise to every trainable parameter");
      add_noise_to(slice.gradient, stddev, dp_noise_key(key_, step, slice.name), slice.begin);
    }
  }
  accountant_.step(noise_multiplier_, sample_rate_);
  if (history_.empty() || history_.back().noise_multiplier != noise_multiplier_ ||
      history_.back().sample_rate != sample_rate_)
    history_.push_back({noise_multiplier_, sample_rate_, 0});
  ++history_.back().steps;
  PrivacyReport report;
  report.epsilon = spent().epsilon;
  report.delta = options_.delta;
  report.sample_rate = sample_rate_;
  report.noise_multiplier = noise_multiplier_;
  report.examples = examples;
  report.clipped_fraction = examples > 0 ? static_cast<double>(clipped) / examples : 0.0;
  return report;
}

uint64_t agreed_secret_key(comm::Communicator& world, uint64_t fixed) {
  if (fixed != 0) return fixed;
  uint64_t key = 0;
  if (world.rank() == 0) {
    std::random_device device;
    key = (static_cast<uint64_t>(device()) << 32) ^ device();
  }
  at::Tensor buffer =
      at::full({1}, static_cast<int64_t>(key), at::TensorOptions().dtype(at::kLong));
  world.broadcast(buffer, 0)->wait();
  return static_cast<uint64_t>(buffer.item<int64_t>());
}

}  // namespace dst

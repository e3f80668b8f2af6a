// The Trainer's DP-SGD parts (train/dp_sgd.h does the arithmetic): the privacy plan, the two
// passes of each micro-batch, and run()'s sampler.
#include <torch/torch.h>

#include "deepseek_train/core/error.h"
#include "deepseek_train/data/distributed_sampler.h"
#include "deepseek_train/data/poisson_sampler.h"
#include "deepseek_train/train/trainer.h"
#include "deepseek_train/train/training_data.h"
#include "dp_sgd.h"

namespace dst {

void Trainer::plan_privacy(double sample_rate, double expected_global_batch) {
  DST_CHECK(dp_sgd_, ConfigError, "plan_privacy: the recipe has no privacy.max_grad_norm");
  dp_sgd_->plan(sample_rate, expected_global_batch, config_.train.steps);
}

std::optional<PrivacyProvenance> Trainer::privacy_provenance() const {
  if (!dp_sgd_ || !dp_sgd_->planned()) return std::nullopt;
  const PrivacyOptions& options = dp_sgd_->options();
  PrivacyProvenance out;
  out.max_grad_norm = options.max_grad_norm;
  out.noise_multiplier = dp_sgd_->noise_multiplier();
  out.sample_rate = dp_sgd_->sample_rate();
  out.sampling = options.sampling;
  out.accountant = options.accountant;
  out.steps = step_;
  out.epsilon = dp_sgd_->spent().epsilon;
  out.delta = options.delta;
  out.history = dp_sgd_->history();
  return out;
}

double Trainer::private_backward(const std::vector<MicroBatch>& micro_batches, double* clipped) {
  DataParallelEngine& engine = *parallel_.engines.front();
  double token_loss_sum = 0.0;
  for (size_t k = 0; k < micro_batches.size(); ++k) {
    const MicroBatch& batch = micro_batches[k];
    const DpSgd::ExampleWeights weights = dp_sgd_->example_weights(*model_, engine, batch);
    *clipped += static_cast<double>(weights.clipped);
    engine.set_sync(k + 1 == micro_batches.size());
    const torch::Tensor logits = model_->forward_chunk(0, batch.input_ids);
    auto [objective, loss_sum] =
        DpSgd::weighted_loss(*model_, logits, batch.labels, weights.weights);
    objective.backward();
    token_loss_sum += loss_sum;
    engine.finish_backward();
  }
  return token_loss_sum;
}

void Trainer::restore_privacy_history(const CheckpointInfo& info, const std::string& directory) {
  if (!dp_sgd_) return;
  const std::optional<PrivacyProvenance> saved =
      privacy_of_provenance(info.provenance, directory + "/manifest.json");
  DST_CHECK(saved || info.step == 0, ConfigError,
            "privacy: " << directory << " was trained " << info.step
                        << " steps without DP-SGD; those steps are not private. Resume it "
                           "without privacy, or start a private run from its weights "
                           "(train.init_from after ckpt convert --to hf)");
  dp_sgd_->restore_history(saved ? saved->history : std::vector<PrivacySegment>{});
}

std::unique_ptr<BatchSampler> Trainer::make_sampler(const TrainingData& data) {
  const TrainOptions& opts = config_.train;
  const int dp_rank = groups_.coord().data_parallel_index(groups_.dims());
  const int dp_size = groups_.dims().data_parallel_size();
  const int64_t size = data.train->size();
  const double batch = static_cast<double>(dp_size) * opts.grad_accum * opts.micro_batch_size;
  std::unique_ptr<BatchSampler> sampler;
  if (dp_sgd_ && config_.privacy.sampling == "poisson") {
    DST_CHECK(batch <= static_cast<double>(size), DataError,
              "privacy: an expected batch of " << batch << " sequences exceeds the dataset's "
                                               << size << " (reduce train.micro_batch_size)");
    // The sampling key is the noise's secret with its own salt.
    sampler = std::make_unique<PoissonSampler>(size, dp_sgd_->key() ^ 0x706f6973736f6eull,
                                               batch / static_cast<double>(size), dp_rank, dp_size,
                                               opts.micro_batch_size);
  } else {
    sampler = std::make_unique<DistributedSampler>(size, opts.seed, dp_rank, dp_size,
                                                   opts.micro_batch_size, opts.grad_accum);
  }
  return sampler;
}

}  // namespace dst

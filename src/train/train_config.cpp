#include "deepseek_train/train/train_config.h"

#include <cmath>

#include "deepseek_train/core/error.h"
#include "deepseek_train/pipeline/partition.h"
#include "deepseek_train/pipeline/schedule.h"

namespace dst {

void TrainConfig::validate_privacy() const {
  privacy.validate();
  if (!privacy.enabled()) return;
  const bool loss_scaling = PrecisionPolicy::from_options(precision).needs_loss_scaler();
  const char* refused = parallel.tp > 1                               ? "parallel.tp > 1"
                        : parallel.pp > 1                             ? "parallel.pp > 1"
                        : parallel.ep > 1                             ? "parallel.ep > 1"
                        : parallel.cp > 1                             ? "parallel.cp > 1"
                        : model_parallel.activation_checkpointing > 0 ? "activation checkpointing"
                        : loss_scaling                                ? "fp16 loss scaling"
                        : moe.aux_loss_alpha > 0                      ? "moe.aux_loss_alpha"
                                                                      : nullptr;
  DST_CHECK(refused == nullptr, ConfigError,
            "privacy: DP-SGD does not combine with " << refused
                                                     << " yet (it runs under data parallelism and "
                                                        "ZeRO-1/2/3, fp32 or bf16)");
  // The bias follows each step's expert loads, which would leave the model without noise.
  DST_CHECK(moe.bias_update_rate == 0, ConfigError,
            "privacy: moe.bias_update_rate must be 0 under DP-SGD (the routing bias would learn "
            "from the data without noise)");
}

void TrainConfig::validate() const {
  model.validate();
  DST_CHECK(std::isfinite(moe.bias_update_rate) && moe.bias_update_rate >= 0, ConfigError,
            "moe.bias_update_rate must be a non-negative number, got " << moe.bias_update_rate);
  DST_CHECK(moe.bias_update_rate == 0 || model.model_type == "deepseek_v3", ConfigError,
            "moe.bias_update_rate needs a model with a routing correction bias (deepseek_v3), "
            "not "
                << model.model_type);
  DST_CHECK(std::isfinite(moe.aux_loss_alpha) && moe.aux_loss_alpha >= 0, ConfigError,
            "moe.aux_loss_alpha must be a non-negative number, got " << moe.aux_loss_alpha);
  DST_CHECK(moe.aux_loss_alpha == 0 || model.has_moe(), ConfigError,
            "moe.aux_loss_alpha needs a model with routed experts (deepseek_v2/deepseek_v3), not "
                << model.model_type);
  checkpoint.validate();
  parallel.validate_axes();
  validate_privacy();
  if (parallel.ep > 1) {
    DST_CHECK(
        model.has_moe(), ConfigError,
        "parallel.ep = " << parallel.ep
                         << ": expert parallelism needs a model with routed experts "
                            "(deepseek_v2/deepseek_v3 with n_routed_experts > 0), model_type '"
                         << model.model_type << "' has none: use ep: 1");
    DST_CHECK(model.n_routed_experts % parallel.ep == 0, ConfigError,
              "model.n_routed_experts (" << model.n_routed_experts
                                         << ") is not divisible by parallel.ep=" << parallel.ep);
  }
  for (const auto& [key, count] :
       {std::pair<const char*, int64_t>{"model.num_attention_heads", model.num_attention_heads},
        {"model.num_key_value_heads", model.num_key_value_heads},
        {"model.intermediate_size", model.intermediate_size}}) {
    DST_CHECK(count % parallel.tp == 0, ConfigError,
              key << " (" << count << ") is not divisible by parallel.tp=" << parallel.tp);
  }
  const ModelParallelOptions& mp = model_parallel;
  DST_CHECK(!mp.sequence_parallel, ConfigError,
            "parallel.sequence_parallel is not implemented yet; set it to false");
  DST_CHECK(mp.activation_checkpointing >= 0, ConfigError,
            "parallel.activation_checkpointing must be >= 0 (0 off, k: every k-th block), got "
                << mp.activation_checkpointing);
  const ScheduleKind schedule_kind = parse_schedule_kind(mp.schedule);
  DST_CHECK(parallel.pp > 1 || mp.virtual_stages == 1, ConfigError,
            "parallel.virtual_stages=" << mp.virtual_stages << " needs parallel.pp > 1");
  if (parallel.pp > 1) {
    dst::validate(ScheduleSpec{schedule_kind, parallel.pp, static_cast<int>(train.grad_accum),
                               mp.virtual_stages});
  }
  partition_layers(model.num_hidden_layers, parallel.pp, mp.virtual_stages, mp.layers_per_stage);
  DST_CHECK(data_parallel.zero_stage >= 0 && data_parallel.zero_stage <= 3, ConfigError,
            "parallel.zero_stage must be 0, 1, 2 or 3, got " << data_parallel.zero_stage);
  const PrecisionPolicy policy = PrecisionPolicy::from_options(precision);
  DST_CHECK(
      policy.reduce == Precision::kFloat32 || policy.reduce == policy.param, ConfigError,
      "precision.reduce_dtype must be fp32 or the param dtype, got " << to_string(policy.reduce));
  DST_CHECK(data_parallel.bucket_mb > 0, ConfigError, "parallel.bucket_mb must be positive");
  DST_CHECK(optim.lr > 0, ConfigError, "optim.lr must be positive, got " << optim.lr);
  DST_CHECK(optim.beta1 >= 0 && optim.beta1 < 1, ConfigError, "optim.beta1 must be in [0, 1)");
  DST_CHECK(optim.beta2 >= 0 && optim.beta2 < 1, ConfigError, "optim.beta2 must be in [0, 1)");
  DST_CHECK(optim.eps > 0, ConfigError, "optim.eps must be positive");
  DST_CHECK(optim.offload == "none" || optim.offload == "cpu", ConfigError,
            "optim.offload '" << optim.offload << "' is not one of none, cpu");
  DST_CHECK(optim.weight_decay >= 0, ConfigError, "optim.weight_decay must be non-negative");
  DST_CHECK(schedule.warmup_steps >= 0, ConfigError, "schedule.warmup_steps must be non-negative");
  DST_CHECK(schedule.min_lr >= 0 && schedule.min_lr <= optim.lr, ConfigError,
            "schedule.min_lr must be in [0, optim.lr]");
  DST_CHECK(data.seq_len > 0, ConfigError, "data.seq_len must be positive");
  DST_CHECK(data.encryption.key_file.empty() || data.encryption.key_env.empty(), ConfigError,
            "data.encryption: set key_file or key_env, not both");
  DST_CHECK(data.seq_len <= model.max_position_embeddings, ConfigError,
            "data.seq_len (" << data.seq_len << ") exceeds model.max_position_embeddings ("
                             << model.max_position_embeddings << ")");
  DST_CHECK(data.val_fraction >= 0 && data.val_fraction < 1, ConfigError,
            "data.val_fraction must be in [0, 1)");
  DST_CHECK(!data.tokenizer.empty(), ConfigError,
            "data.tokenizer must be 'byte' or the path of a tokenizer.json");
  DST_CHECK(train.steps > 0, ConfigError, "train.steps must be positive");
  DST_CHECK(train.micro_batch_size > 0, ConfigError, "train.micro_batch_size must be positive");
  DST_CHECK(train.grad_accum > 0, ConfigError, "train.grad_accum must be positive");
  DST_CHECK(train.log_every > 0, ConfigError, "train.log_every must be positive");
  DST_CHECK(train.eval_every >= 0, ConfigError, "train.eval_every must be non-negative");
  DST_CHECK(train.eval_batches > 0, ConfigError, "train.eval_batches must be positive");
  DST_CHECK(!train.output_dir.empty(), ConfigError, "train.output_dir must not be empty");
  DST_CHECK(train.threads >= 0, ConfigError, "train.threads must be non-negative");
  DST_CHECK(train.early_stopping_patience >= 0, ConfigError,
            "train.early_stopping.patience must be non-negative");
  DST_CHECK(train.early_stopping_min_delta >= 0, ConfigError,
            "train.early_stopping.min_delta must be non-negative");
  DST_CHECK(comm.backend == "auto" || comm.backend == "mpi" || comm.backend == "nccl" ||
                comm.backend == "local",
            ConfigError,
            "comm.backend '" << comm.backend << "' is not one of auto, mpi, nccl, local");
  DST_CHECK(train.device == "auto" || train.device == "cpu" || train.device == "cuda", ConfigError,
            "train.device '" << train.device << "' is not one of auto, cpu, cuda");
  DST_CHECK(train.nonfinite_policy == "skip" || train.nonfinite_policy == "abort", ConfigError,
            "train.nonfinite.policy '" << train.nonfinite_policy << "' is not one of skip, abort");
  DST_CHECK(train.nonfinite_max_consecutive > 0, ConfigError,
            "train.nonfinite.max_consecutive must be positive");
  DST_CHECK(train.peak_flops_per_rank >= 0 && std::isfinite(train.peak_flops_per_rank), ConfigError,
            "train.peak_flops_per_rank must be a non-negative number");
  DST_CHECK(train.prometheus_every >= 0, ConfigError,
            "train.prometheus_every must be non-negative");
  DST_CHECK(train.kernels == "fused" || train.kernels == "reference", ConfigError,
            "train.kernels '" << train.kernels << "' is not one of fused, reference");
  DST_CHECK(train.cpu_allocator == "mapped" || train.cpu_allocator == "default", ConfigError,
            "train.cpu_allocator '" << train.cpu_allocator << "' is not one of mapped, default");
  DST_CHECK(train.cpu_allocator_cache_mb >= 0, ConfigError,
            "train.cpu_allocator_cache_mb must be non-negative");
  DST_CHECK(train.progress == "auto" || train.progress == "bar" || train.progress == "lines",
            ConfigError,
            "train.progress '" << train.progress << "' is not one of auto, bar, lines");
  // Bounded so that the deadline in milliseconds cannot overflow, and long enough to poll.
  constexpr double kMaxTimeoutSeconds = 7 * 24 * 3600.0;
  DST_CHECK(std::isfinite(comm.timeout_s) && comm.timeout_s >= 0.1 &&
                comm.timeout_s <= kMaxTimeoutSeconds,
            ConfigError,
            "comm.timeout_s must be a number of seconds in [0.1, " << kMaxTimeoutSeconds
                                                                   << "], got " << comm.timeout_s);
  DST_CHECK(
      model.vocab_size >= 259 || data.tokenizer != "byte", ConfigError,
      "model.vocab_size (" << model.vocab_size << ") is smaller than the byte tokenizer's 259 ids");
}

}  // namespace dst

// Everything a training run is configured by: one option struct per module, composed. The recipe
// module fills it from YAML; C++ trainers can fill it directly. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "deepseek_train/adapters/adapter_config.h"
#include "deepseek_train/checkpoint/checkpoint_options.h"
#include "deepseek_train/comm/comm_options.h"
#include "deepseek_train/data/corpus_prepare.h"
#include "deepseek_train/data/data_options.h"
#include "deepseek_train/mesh/parallel_dims.h"
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/optim/optim_options.h"
#include "deepseek_train/precision/precision_policy.h"
#include "deepseek_train/privacy/privacy_options.h"
#include "deepseek_train/sharding/data_parallel_options.h"

namespace dst {

struct TrainOptions {
  int64_t steps = 100;
  int64_t micro_batch_size = 4;  // sequences per rank per micro-batch
  int64_t grad_accum = 1;        // micro-batches per optimizer step
  uint64_t seed = 1234;
  int64_t log_every = 10;
  int64_t eval_every = 50;   // 0 = only at the end
  int64_t eval_batches = 8;  // micro-batches per rank per evaluation
  std::string output_dir = "runs/default";
  int threads = 0;  // libtorch intra-op threads; 0 = cores / local ranks
  std::string log_level = "info";
  // "latest" or a checkpoint directory to continue from ("" = start fresh); --resume sets it.
  std::string resume;
  // A Hugging Face model folder (config.json + safetensors) whose weights initialise the model.
  std::string init_from;
  // A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) whose weights
  // initialise the adapter (train/peft_import.h); its adapter_config.json gives the adapter when
  // the recipe lists none.
  std::string init_adapter;
  // Early stopping on the validation loss (checked at every evaluation): stop after `patience`
  // evaluations without an improvement larger than min_delta (0 = never stop early).
  int64_t early_stopping_patience = 0;
  double early_stopping_min_delta = 0.0;
  // A step whose loss or global gradient norm is NaN/Inf never updates the parameters (every rank
  // sees the same all-reduced values, so all skip it together). policy "skip" keeps training;
  // "abort" ends the run once `max_consecutive` steps in a row were non-finite, naming the first
  // parameter whose gradient went non-finite. Under fp16 dynamic loss scaling a gradient overflow
  // with a finite loss is routine (the scaler halves its scale) and does not count.
  std::string nonfinite_policy = "abort";  // skip | abort
  int64_t nonfinite_max_consecutive = 8;
  // Rank 0 rewrites <output_dir>/metrics.prom (node_exporter textfile format) every N steps
  // (0 = never).
  int64_t prometheus_every = 0;
  // Progress display on rank 0: "auto" (a redrawn bar on a terminal, log lines otherwise),
  // "bar" or "lines".
  std::string progress = "auto";
  // FLOP/s one rank can reach, the denominator of MFU (0 = measure a matmul in the compute
  // dtype at start-up).
  double peak_flops_per_rank = 0.0;
  // "fused": CPU models run kernels/fused_ops.h (fused linear, RMSNorm, SwiGLU, attention,
  // cross-entropy; bf16 activations widened to fp32 around all but the linear); "reference": the
  // chains of ATen ops they replace (same results within rounding; for debugging and comparison).
  std::string kernels = "fused";
  // CPU memory (core/cpu_allocator.h): "mapped" (blocks of 1 MiB or more mapped on their own,
  // freed ones kept for reuse up to cpu_allocator_cache_mb, so RSS follows the tensors held) or
  // "default" (libtorch's malloc-backed one). Process-wide: the Trainer installs it.
  std::string cpu_allocator = "mapped";
  int64_t cpu_allocator_cache_mb = 512;
  // Where the model, its flat buffers and the batches live (core/device.h): "auto" (CUDA when a
  // device is visible, one per local rank), "cpu" or "cuda" (an error without a visible GPU).
  std::string device = "auto";
};

// Recipe keys parallel.{schedule, virtual_stages, layers_per_stage, activation_checkpointing,
// sequence_parallel}; parallel.micro_batches is train.grad_accum (pipeline micro-batches and
// gradient accumulation are the same thing).
struct ModelParallelOptions {
  std::string schedule = "1f1b";          // gpipe | 1f1b | interleaved_1f1b (when pp > 1)
  int virtual_stages = 1;                 // model chunks per pipeline rank (interleaved)
  std::vector<int64_t> layers_per_stage;  // empty: balanced; else one count per virtual stage
  int activation_checkpointing = 0;       // recompute every k-th block in backward (0: off)
  bool sequence_parallel = false;         // not implemented: must stay false
};

// Mixture-of-experts training (recipe section `moe:`, DeepSeek families).
struct MoeOptions {
  // DeepSeek-V3's auxiliary-loss-free balancing: after each step every MoE layer's routing
  // correction bias moves by this rate times sign(mean load - expert load), mean-centred
  // (train/expert_load_balancer.h). 0: the bias stays as loaded (DeepSeek-V3 used 0.001).
  double bias_update_rate = 0.0;
  // DeepSeek's sequence-wise balance loss (model/moe_router.h), alpha times its mean over the
  // step's sequences, summed over the MoE layers, joins the token-mean loss (DeepSeek-V2 trained
  // with 0.003, V3 with a very small value; 0: off).
  double aux_loss_alpha = 0.0;
};

struct TrainConfig {
  ModelConfig model;
  ParallelDims parallel;
  DataParallelOptions data_parallel;  // recipe keys parallel.bucket_mb, parallel.zero_stage
  ModelParallelOptions model_parallel;
  PrecisionOptions precision;  // fp32, bf16 or fp16 (with dynamic loss scaling)
  AdamWOptions optim;
  ScheduleOptions schedule;
  DataOptions data;
  TrainOptions train;
  CommOptions comm;
  CheckpointOptions checkpoint;
  MoeOptions moe;
  // DP-SGD (privacy/privacy_options.h); off unless privacy.max_grad_norm is set.
  PrivacyOptions privacy;
  // Parameter-efficient fine-tuning: when non-empty the base model is frozen and only the
  // adapters' parameters train (adapters/adapter.h).
  std::vector<AdapterConfig> adapters;
  // `dstrain prepare`'s options (recipe section `prepare:`); training itself reads the result
  // through data.prepared.
  PrepareOptions prepare;

  // Cross-field checks that need no world size (model shape against tp and pp, the pipeline
  // schedule, positive counts, seq_len within max_position_embeddings, ...). Throws ConfigError
  // naming the key.
  void validate() const;

 private:
  // The layouts and options DP-SGD cannot run with yet.
  void validate_privacy() const;
};

}  // namespace dst

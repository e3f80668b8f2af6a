// Everything a training run is configured by: one option struct per module, composed. The recipe
// module fills it from YAML; C++ trainers can fill it directly. Torch-free.
#pragma once

#include <cstdint>
#include <string>

#include "deepseek_train/comm/comm_options.h"
#include "deepseek_train/data/data_options.h"
#include "deepseek_train/mesh/parallel_dims.h"
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/optim/optim_options.h"
#include "deepseek_train/precision/precision_policy.h"
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
};

struct TrainConfig {
  ModelConfig model;
  ParallelDims parallel;
  DataParallelOptions data_parallel;  // recipe keys parallel.bucket_mb, parallel.zero_stage
  PrecisionOptions precision;         // fp32, bf16 or fp16 (with dynamic loss scaling)
  AdamWOptions optim;
  ScheduleOptions schedule;
  DataOptions data;
  TrainOptions train;
  CommOptions comm;

  // Cross-field checks that need no world size (model shape, positive counts, tp/pp not yet
  // implemented, seq_len within max_position_embeddings, ...). Throws ConfigError naming the key.
  void validate() const;
};

}  // namespace dst

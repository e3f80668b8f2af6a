// Shared fixtures of the multi-process training-equivalence tests: a small model config, a
// deterministic global batch per step with uneven target-token counts, row slicing, and the
// relative difference of two tensors, and the comparison of two trainers' full parameters.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "deepseek_train/train/trainer.h"
#include "support/deepseek_config.h"

namespace dst::testing {

inline TrainConfig equivalence_config(int dp, int64_t grad_accum) {
  TrainConfig c;
  c.model.vocab_size = 259;
  c.model.hidden_size = 32;
  c.model.intermediate_size = 64;
  c.model.num_hidden_layers = 2;
  c.model.num_attention_heads = 4;
  c.model.num_key_value_heads = 2;
  c.model.max_position_embeddings = 64;
  c.parallel.dp = dp;
  c.data_parallel.bucket_mb = 0.02;  // several buckets, so overlap and ordering are exercised
  c.optim.lr = 1e-3;
  // Adam divides by sqrt(v) + eps: with eps = 1e-8 an element whose gradient is at rounding level
  // turns a rounding difference into an update difference of up to lr; 1e-6 keeps the comparison
  // about the parallel algorithm rather than fp32 rounding amplified by Adam.
  c.optim.eps = 1e-6;
  c.optim.weight_decay = 0.1;
  c.optim.grad_clip = 0.5;
  c.schedule.warmup_steps = 2;
  c.schedule.min_lr = 1e-4;
  c.data.seq_len = 16;
  c.train.steps = 5;
  c.train.micro_batch_size = 2;
  c.train.grad_accum = grad_accum;
  c.train.seed = 99;
  return c;
}

// equivalence_config with the tiny DeepSeek-V3 of support/deepseek_config.h, its routing bias
// updated after every step.
inline TrainConfig deepseek_equivalence_config(int dp, int64_t grad_accum) {
  TrainConfig c = equivalence_config(dp, grad_accum);
  c.model = tiny_deepseek_v3(c.model);
  c.moe.bias_update_rate = 0.01;  // the auxiliary-loss-free balancing moves the routing bias
  c.moe.aux_loss_alpha = 0.01;    // and the sequence-wise balance loss joins the objective
  return c;
}

// The global batch of a step: rows of random tokens; labels are the next tokens with a varying
// number of positions ignored per row, so micro-batches carry different token counts.
inline MicroBatch global_batch(int64_t step, int64_t rows, int64_t seq) {
  auto generator = at::detail::createCPUGenerator(1000 + step);
  auto tokens = torch::randint(0, 259, {rows, seq + 1}, generator, torch::kInt64);
  MicroBatch batch;
  batch.input_ids = tokens.narrow(1, 0, seq).contiguous();
  batch.labels = tokens.narrow(1, 1, seq).clone();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t ignored = (r * 5 + step * 3) % seq;  // 0..seq-1 ignored positions
    batch.labels[r].narrow(0, 0, ignored).fill_(kIgnoreIndex);
  }
  return batch;
}

inline MicroBatch rows_of(const MicroBatch& batch, int64_t start, int64_t count) {
  return {batch.input_ids.narrow(0, start, count).contiguous(),
          batch.labels.narrow(0, start, count).contiguous()};
}

// A data-parallel rank's micro-batches of a global batch: `count` micro-batches of `rows` rows,
// the k-th being global micro-batch k * dp_size + dp_rank (the sampler's interleaving). With
// dp_size 1 the whole batch in order, as a single-process reference takes it.
inline std::vector<MicroBatch> rank_micro_batches(const MicroBatch& batch, int64_t count,
                                                  int64_t rows, int64_t dp_size, int64_t dp_rank) {
  std::vector<MicroBatch> mine;
  for (int64_t k = 0; k < count; ++k)
    mine.push_back(rows_of(batch, (k * dp_size + dp_rank) * rows, rows));
  return mine;
}

// ||a - b|| / ||b|| over the whole tensor.
inline double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).to(torch::kFloat64).norm() / b.to(torch::kFloat64).norm().clamp_min(1e-30))
      .item<double>();
}

// Checks that `actual` holds the parameters of `expected` (same names in the same order, each
// within `tolerance` of ||a - b|| / ||b||); returns the worst difference. Collective under ZeRO-3
// and tp (full_parameters gathers).
inline double check_same_full_parameters(Trainer& expected_trainer, Trainer& actual_trainer,
                                         double tolerance) {
  const auto expected = expected_trainer.full_parameters();
  const auto actual = actual_trainer.full_parameters();
  REQUIRE(expected.size() == actual.size());
  double worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO(expected[i].first);
    CHECK(actual[i].first == expected[i].first);
    const double diff = relative_difference(actual[i].second, expected[i].second);
    worst = std::max(worst, diff);
    CHECK(diff <= tolerance);
  }
  return worst;
}

}  // namespace dst::testing

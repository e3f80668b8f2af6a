#include "deepseek_train/tensor_parallel/vocab_parallel.h"

#include <torch/torch.h>

#include <limits>

#include "deepseek_train/core/error.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"

namespace dst {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Megatron's vocab-parallel cross-entropy: the softmax normaliser and the target logit are
// combined across the group with two small all-reduces per token row ([rows] max, [2, rows] sums).
struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits_shard,
                            const at::Tensor& labels, const VocabShard* shard,
                            comm::Communicator* group, int64_t ignore_index) {
    const int64_t local = shard->size();
    at::Tensor x = logits_shard.reshape({-1, local}).to(at::kFloat).clone();
    at::Tensor flat_labels = labels.reshape({-1});
    const int64_t padded_from = shard->vocab - shard->begin;  // first padded local column
    if (padded_from < local) x.narrow(1, padded_from, local - padded_from).fill_(-INFINITY);

    at::Tensor row_max = std::get<0>(x.max(1));
    if (group->size() > 1) group->all_reduce(row_max, comm::ReduceOp::kMax)->wait();
    x.sub_(row_max.unsqueeze(1));

    at::Tensor valid = flat_labels.ne(ignore_index);
    at::Tensor owned = valid & flat_labels.ge(shard->begin) & flat_labels.lt(shard->end);
    at::Tensor local_index = (flat_labels - shard->begin).clamp(0, local - 1);
    at::Tensor exp = x.exp();
    at::Tensor sums = at::stack(
        {x.gather(1, local_index.unsqueeze(1)).squeeze(1) * owned.to(at::kFloat), exp.sum(1)});
    if (group->size() > 1) group->all_reduce(sums, comm::ReduceOp::kSum)->wait();
    at::Tensor target_logit = sums[0], normaliser = sums[1];

    at::Tensor losses = (normaliser.log() - target_logit) * valid.to(at::kFloat);
    ctx->save_for_backward({exp.div_(normaliser.unsqueeze(1)), local_index, owned, valid});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits_shard.scalar_type());
    ctx->saved_data["shape"] = logits_shard.sizes().vec();
    return losses.sum();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    at::Tensor grad = saved[0];  // softmax over the full vocabulary, this rank's columns
    const at::Tensor& local_index = saved[1];
    grad.scatter_add_(1, local_index.unsqueeze(1), -saved[2].to(at::kFloat).unsqueeze(1));
    grad.mul_(saved[3].to(at::kFloat).unsqueeze(1)).mul_(grads[0]);
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.view(ctx->saved_data["shape"].toIntVector()).to(dtype), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

VocabShard vocab_shard(int64_t vocab, int tp_size, int tp_rank) {
  DST_CHECK(vocab > 0 && tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, ConfigError,
            "vocab_shard: vocab " << vocab << ", tp " << tp_size << ", rank " << tp_rank);
  VocabShard shard;
  shard.vocab = vocab;
  shard.padded_vocab = (vocab + tp_size - 1) / tp_size * tp_size;
  const int64_t local = shard.padded_vocab / tp_size;
  shard.begin = tp_rank * local;
  shard.end = shard.begin + local;
  return shard;
}

at::Tensor vocab_parallel_embedding(const at::Tensor& ids, const at::Tensor& weight_shard,
                                    const VocabShard& shard, comm::Communicator& group) {
  if (group.size() == 1) return torch::nn::functional::embedding(ids, weight_shard);
  at::Tensor outside = ids.lt(shard.begin) | ids.ge(shard.end);
  at::Tensor local_ids = (ids - shard.begin).masked_fill(outside, 0);
  at::Tensor partial = torch::nn::functional::embedding(local_ids, weight_shard)
                           .masked_fill(outside.unsqueeze(-1), 0);
  return reduce_from_tp_region(partial, group);
}

at::Tensor vocab_parallel_cross_entropy_sum(const at::Tensor& logits_shard,
                                            const at::Tensor& labels, const VocabShard& shard,
                                            comm::Communicator& group, int64_t ignore_index) {
  DST_CHECK(logits_shard.size(-1) == shard.size(), ConfigError,
            "vocab-parallel cross-entropy: logits have " << logits_shard.size(-1)
                                                         << " columns, the shard " << shard.size());
  return VocabParallelCrossEntropy::apply(logits_shard, labels, &shard, &group, ignore_index);
}

}  // namespace dst

#include "deepseek_train/tensor_parallel/parallel_layers.h"

#include <torch/nn/functional/embedding.h>
#include <torch/nn/functional/linear.h>

#include "deepseek_train/core/deferred_tensor.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/tensor_parallel/autograd_ops.h"

namespace dst {

namespace {

namespace F = torch::nn::functional;

// The group when it splits anything (size > 1), else null.
comm::CommunicatorPtr splitting(comm::CommunicatorPtr group) {
  return group && group->size() > 1 ? std::move(group) : nullptr;
}
int size_of(const comm::CommunicatorPtr& group) { return group ? group->size() : 1; }
int rank_of(const comm::CommunicatorPtr& group) { return group ? group->rank() : 0; }

torch::nn::LinearOptions bias_free(int64_t in, int64_t out) {
  return torch::nn::LinearOptions(in, out).bias(false);
}

// The layers' weights are deferred (core/deferred_tensor.h): the libtorch base class is built
// with a 1x1 weight, which is then replaced by a weight of the real shape without memory.
torch::Tensor deferred_weight(int64_t rows, int64_t columns) {
  torch::Tensor weight = deferred_tensor({rows, columns});
  weight.set_requires_grad(true);
  return weight;
}

}  // namespace

int64_t tp_local_count(int64_t total, const comm::CommunicatorPtr& group, const std::string& what) {
  const int tp = size_of(group);
  DST_CHECK(
      total % tp == 0, ConfigError,
      "tensor parallel: " << what << " (" << total << ") is not divisible by parallel.tp=" << tp);
  return total / tp;
}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(int64_t in_features, int64_t out_features,
                                                   comm::CommunicatorPtr group,
                                                   const std::string& what)
    : ColumnParallelLinearImpl(in_features, tp_local_count(out_features, group, what), group, 0) {}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(int64_t in_features, int64_t local_out,
                                                   comm::CommunicatorPtr group,
                                                   int64_t unpadded_rows)
    : torch::nn::LinearImpl(bias_free(1, 1)),
      group_(splitting(std::move(group))),
      unpadded_rows_(unpadded_rows) {
  options = bias_free(in_features, local_out);
  weight = parameters_["weight"] = deferred_weight(local_out, in_features);
}

ReplicatedLinearImpl::ReplicatedLinearImpl(int64_t in_features, int64_t out_features)
    : torch::nn::LinearImpl(bias_free(1, 1)) {
  options = bias_free(in_features, out_features);
  weight = parameters_["weight"] = deferred_weight(out_features, in_features);
}

std::shared_ptr<ColumnParallelLinearImpl> ColumnParallelLinearImpl::vocab_head(
    int64_t hidden, int64_t vocab, comm::CommunicatorPtr group) {
  const VocabShard shard = vocab_shard(vocab, size_of(group), rank_of(group));
  return std::shared_ptr<ColumnParallelLinearImpl>(
      new ColumnParallelLinearImpl(hidden, shard.size(), std::move(group), vocab));
}

torch::Tensor ColumnParallelLinearImpl::forward(const torch::Tensor& x) {
  const torch::Tensor input = group_ ? copy_to_tp_region(x, *group_) : x;
  return F::linear(input, weight.to(input.scalar_type()));
}

RowParallelLinearImpl::RowParallelLinearImpl(int64_t in_features, int64_t out_features,
                                             comm::CommunicatorPtr group, const std::string& what)
    : torch::nn::LinearImpl(bias_free(1, 1)), group_(splitting(std::move(group))) {
  const int64_t local_in = tp_local_count(in_features, group_, what);
  options = bias_free(local_in, out_features);
  weight = parameters_["weight"] = deferred_weight(out_features, local_in);
}

torch::Tensor RowParallelLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor partial = F::linear(x, weight.to(x.scalar_type()));
  return group_ ? reduce_from_tp_region(partial, *group_) : partial;
}

VocabParallelEmbeddingImpl::VocabParallelEmbeddingImpl(int64_t vocab, int64_t hidden,
                                                       comm::CommunicatorPtr group)
    : torch::nn::EmbeddingImpl(1, 1),
      group_(splitting(std::move(group))),
      shard_(vocab_shard(vocab, size_of(group_), rank_of(group_))) {
  options.num_embeddings(shard_.size()).embedding_dim(hidden);
  weight = parameters_["weight"] = deferred_weight(shard_.size(), hidden);
}

torch::Tensor VocabParallelEmbeddingImpl::forward(const torch::Tensor& ids) {
  if (group_) return vocab_parallel_embedding(ids, weight, shard_, *group_);
  return F::embedding(ids, weight);
}

}  // namespace dst

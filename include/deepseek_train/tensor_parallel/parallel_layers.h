// Tensor-parallel layers (Megatron-Core's ColumnParallelLinear, RowParallelLinear and
// VocabParallelEmbedding): each owns its tp group and knows along which dimension its weight is
// split, so a model built from them needs no table of parameter names to be split, shaped,
// initialised, gathered or checkpointed (CausalLM::record_tp_splits reads them). All bias-free,
// as Llama and DeepSeek are.
//
// Their forward() is the textbook one (column: copy into the tp region, project to this rank's
// output columns; row: project this rank's input slice, sum across tp). A model that fuses
// several projections behind one region boundary (Llama's q/k/v) uses their weights directly.
#pragma once

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/tensor_parallel/vocab_parallel.h"

namespace dst {

// How a parameter is split across the tp group: not at all, along dim 0 (column-parallel
// projections, vocabulary rows) or along dim 1 (row-parallel projections).
enum class TpSplit { kReplicated, kDim0, kDim1 };

// What every tensor-parallel layer tells about its weight.
class TensorParallelLayer {
 public:
  virtual ~TensorParallelLayer() = default;
  virtual TpSplit weight_split() const = 0;
  // The weight's full row count when its rows are padded for an even vocabulary split; 0 when
  // the rows are not padded.
  virtual int64_t unpadded_rows() const { return 0; }
};

// `total` / group size; ConfigError "tensor parallel: <what> (<total>) is not divisible by
// parallel.tp=<size>" when it does not divide.
int64_t tp_local_count(int64_t total, const comm::CommunicatorPtr& group, const std::string& what);

// y[..., out/tp] = x[..., in] W_r^T: this rank's rows of W [out, in].
class ColumnParallelLinearImpl : public torch::nn::LinearImpl, public TensorParallelLayer {
 public:
  // `what` names out_features in the divisibility error ("num_attention_heads * head_dim").
  ColumnParallelLinearImpl(int64_t in_features, int64_t out_features, comm::CommunicatorPtr group,
                           const std::string& what = "out_features");
  // The LM head over a vocabulary split as VocabParallelEmbedding splits it (padded rows zero).
  static std::shared_ptr<ColumnParallelLinearImpl> vocab_head(int64_t hidden, int64_t vocab,
                                                              comm::CommunicatorPtr group);
  // x (the full activation) -> this rank's output columns; the gradient of x is summed over tp.
  torch::Tensor forward(const torch::Tensor& x);
  TpSplit weight_split() const override { return TpSplit::kDim0; }
  int64_t unpadded_rows() const override { return unpadded_rows_; }
  const comm::CommunicatorPtr& group() const { return group_; }

 private:
  ColumnParallelLinearImpl(int64_t in_features, int64_t local_out, comm::CommunicatorPtr group,
                           int64_t unpadded_rows);
  comm::CommunicatorPtr group_;
  int64_t unpadded_rows_ = 0;
};
TORCH_MODULE(ColumnParallelLinear);

// y[..., out] = sum over tp of x_r[..., in/tp] W_r^T: this rank's columns of W [out, in].
class RowParallelLinearImpl : public torch::nn::LinearImpl, public TensorParallelLayer {
 public:
  RowParallelLinearImpl(int64_t in_features, int64_t out_features, comm::CommunicatorPtr group,
                        const std::string& what = "in_features");
  // x (this rank's input slice) -> the full output, summed over tp.
  torch::Tensor forward(const torch::Tensor& x);
  TpSplit weight_split() const override { return TpSplit::kDim1; }
  const comm::CommunicatorPtr& group() const { return group_; }

 private:
  comm::CommunicatorPtr group_;
};
TORCH_MODULE(RowParallelLinear);

// y = x W^T with the whole W [out, in] on every tp rank (the projections tensor parallelism
// leaves whole: MLA's down-projections, MoE routers and experts). Deferred like the others.
class ReplicatedLinearImpl : public torch::nn::LinearImpl, public TensorParallelLayer {
 public:
  ReplicatedLinearImpl(int64_t in_features, int64_t out_features);
  TpSplit weight_split() const override { return TpSplit::kReplicated; }
};
TORCH_MODULE(ReplicatedLinear);

// Token embedding with this rank's rows of the vocabulary (padded to a multiple of tp).
class VocabParallelEmbeddingImpl : public torch::nn::EmbeddingImpl, public TensorParallelLayer {
 public:
  VocabParallelEmbeddingImpl(int64_t vocab, int64_t hidden, comm::CommunicatorPtr group);
  // ids [..] -> [.., hidden], summed over tp (ids outside this rank's rows contribute zero).
  torch::Tensor forward(const torch::Tensor& ids);
  TpSplit weight_split() const override { return TpSplit::kDim0; }
  int64_t unpadded_rows() const override { return shard_.vocab; }
  const VocabShard& shard() const { return shard_; }
  const comm::CommunicatorPtr& group() const { return group_; }

 private:
  comm::CommunicatorPtr group_;
  VocabShard shard_;
};
TORCH_MODULE(VocabParallelEmbedding);

}  // namespace dst

// The vocabulary split across the tp group (Megatron's vocab-parallel embedding and
// cross-entropy): rank r owns rows [begin, end) of the embedding / LM-head matrices, the
// vocabulary padded up to a multiple of tp. Full-vocabulary logits are never gathered; padded
// entries never influence the loss (their logits are treated as -inf).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "deepseek_train/comm/communicator.h"

namespace dst {

struct VocabShard {
  int64_t vocab = 0;         // the model's true vocabulary size
  int64_t padded_vocab = 0;  // a multiple of the tp size
  int64_t begin = 0;         // first global id this rank owns
  int64_t end = 0;           // one past the last
  int64_t size() const { return end - begin; }
};

VocabShard vocab_shard(int64_t vocab, int tp_size, int tp_rank);

// Embedding lookup with this rank's rows [shard.size(), hidden]; ids outside the shard
// contribute zeros and the partial results are summed over the group (autograd-aware).
at::Tensor vocab_parallel_embedding(const at::Tensor& ids, const at::Tensor& weight_shard,
                                    const VocabShard& shard, comm::Communicator& group);

// Sum of token cross-entropies from logits sharded along the vocabulary ([..., shard.size()],
// this rank's columns) and global labels [...] (labels == ignore_index are not counted).
// Computed in fp32; the gradient flows to logits_shard.
at::Tensor vocab_parallel_cross_entropy_sum(const at::Tensor& logits_shard,
                                            const at::Tensor& labels, const VocabShard& shard,
                                            comm::Communicator& group, int64_t ignore_index);

}  // namespace dst

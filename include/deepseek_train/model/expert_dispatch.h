// Expert parallelism's token exchange (torchtitan's and Megatron's "all-to-all dispatcher"):
// with the routed experts split over the ranks of an ep group (rank r holds experts
// [r * E/ep, (r + 1) * E/ep)), each rank sends every (token, expert) pair it routed to the rank
// holding the expert, which computes all pairs of each of its experts as one contiguous group,
// and sends the results back. Counts travel first (one all_to_all of E/ep integers per peer),
// then the rows (one all_to_all with those split sizes): no capacity factor, no dropped tokens.
// Both exchanges are differentiable (backward is the reverse exchange).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "deepseek_train/comm/communicator.h"

namespace dst {

// What dispatch received, and how to send the results back.
struct DispatchedTokens {
  torch::Tensor rows;                          // [received pairs, hidden], grouped by local expert
  std::vector<int64_t> rows_per_local_expert;  // group sizes, local expert order
  std::vector<int64_t> sent_per_rank, received_per_rank;
  torch::Tensor order;  // received (source-major) row -> position in `rows`
};

class ExpertDispatcher {
 public:
  // ConfigError when num_experts is not divisible by the group size (parallel.ep).
  ExpertDispatcher(comm::CommunicatorPtr ep_group, int64_t num_experts);
  int64_t local_experts() const { return local_experts_; }
  int64_t first_local_expert() const { return first_local_expert_; }

  // rows: [pairs, hidden] sorted by global expert; pairs_per_expert: int64 CPU [num_experts]
  // (their counts). Collective over the group.
  DispatchedTokens dispatch(const torch::Tensor& rows, const torch::Tensor& pairs_per_expert) const;
  // The experts' outputs (rows in DispatchedTokens::rows order) back to the ranks that sent them:
  // [pairs, out] in the order `rows` had in dispatch. Collective over the group.
  torch::Tensor combine(const torch::Tensor& outputs, const DispatchedTokens& dispatched) const;

 private:
  comm::CommunicatorPtr group_;
  int64_t num_experts_, local_experts_, first_local_expert_;
};

// all_to_all of rows with autograd: rank r's rows [sum(input_splits[0..r)), + input_splits[r])
// go to rank r; backward sends the gradients back the same way.
torch::Tensor all_to_all_rows(const torch::Tensor& rows, const std::vector<int64_t>& output_splits,
                              const std::vector<int64_t>& input_splits, comm::Communicator& group);

}  // namespace dst

#include "deepseek_train/model/expert_dispatch.h"

#include <torch/torch.h>

#include <numeric>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

torch::Tensor exchange(const torch::Tensor& rows, const std::vector<int64_t>& output_splits,
                       const std::vector<int64_t>& input_splits, comm::Communicator& group) {
  const int64_t total = std::accumulate(output_splits.begin(), output_splits.end(), int64_t{0});
  std::vector<int64_t> shape = rows.sizes().vec();
  shape[0] = total;
  torch::Tensor output = torch::empty(shape, rows.options());
  group.all_to_all(output, rows.contiguous(), output_splits, input_splits)->wait();
  return output;
}

// The group and the splits travel to backward as IValues; the caller guarantees the group
// outlives the graph.
struct AllToAllRows : torch::autograd::Function<AllToAllRows> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& rows,
                               std::vector<int64_t> output_splits,
                               std::vector<int64_t> input_splits, comm::Communicator* group) {
    ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(group));
    ctx->saved_data["output_splits"] = output_splits;
    ctx->saved_data["input_splits"] = input_splits;
    return exchange(rows, output_splits, input_splits, *group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* group = reinterpret_cast<comm::Communicator*>(
        static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
    const std::vector<int64_t> output_splits = ctx->saved_data["output_splits"].toIntVector();
    const std::vector<int64_t> input_splits = ctx->saved_data["input_splits"].toIntVector();
    return {exchange(grads[0], input_splits, output_splits, *group), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor all_to_all_rows(const torch::Tensor& rows, const std::vector<int64_t>& output_splits,
                              const std::vector<int64_t>& input_splits, comm::Communicator& group) {
  return AllToAllRows::apply(rows, output_splits, input_splits, &group);
}

ExpertDispatcher::ExpertDispatcher(comm::CommunicatorPtr ep_group, int64_t num_experts)
    : group_(std::move(ep_group)), num_experts_(num_experts) {
  DST_CHECK(group_, InternalError, "ExpertDispatcher without a group");
  const int ep = group_->size();
  DST_CHECK(num_experts % ep == 0, ConfigError,
            "expert parallel: model.n_routed_experts ("
                << num_experts << ") is not divisible by parallel.ep=" << ep);
  local_experts_ = num_experts / ep;
  first_local_expert_ = group_->rank() * local_experts_;
}

DispatchedTokens ExpertDispatcher::dispatch(const torch::Tensor& rows,
                                            const torch::Tensor& pairs_per_expert) const {
  const int ep = group_->size();
  DispatchedTokens out;
  // How many pairs go to each rank, and how many each rank sends for each local expert.
  const torch::Tensor counts = pairs_per_expert.to(torch::kInt64).contiguous();
  torch::Tensor received_counts = torch::empty_like(counts);  // [source rank][local expert]
  group_->all_to_all(received_counts, counts, {}, {})->wait();
  const int64_t* sent = counts.data_ptr<int64_t>();
  const int64_t* received = received_counts.data_ptr<int64_t>();
  out.sent_per_rank.assign(ep, 0);
  out.received_per_rank.assign(ep, 0);
  out.rows_per_local_expert.assign(local_experts_, 0);
  for (int r = 0; r < ep; ++r) {
    for (int64_t j = 0; j < local_experts_; ++j) {
      out.sent_per_rank[r] += sent[r * local_experts_ + j];
      out.received_per_rank[r] += received[r * local_experts_ + j];
      out.rows_per_local_expert[j] += received[r * local_experts_ + j];
    }
  }
  const torch::Tensor arrived =
      all_to_all_rows(rows, out.received_per_rank, out.sent_per_rank, *group_);
  // Arrived rows are source-major (within a source, local-expert-major): regroup expert-major.
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(arrived.size(0)));
  std::vector<int64_t> source_offset(ep, 0);
  for (int r = 1; r < ep; ++r)
    source_offset[r] = source_offset[r - 1] + out.received_per_rank[r - 1];
  for (int64_t j = 0; j < local_experts_; ++j) {
    for (int r = 0; r < ep; ++r) {
      int64_t begin = source_offset[r];
      for (int64_t k = 0; k < j; ++k) begin += received[r * local_experts_ + k];
      for (int64_t i = 0; i < received[r * local_experts_ + j]; ++i) order.push_back(begin + i);
    }
  }
  out.order = torch::tensor(order, torch::kInt64).to(rows.device());
  out.rows = arrived.index_select(0, out.order);
  return out;
}

torch::Tensor ExpertDispatcher::combine(const torch::Tensor& outputs,
                                        const DispatchedTokens& dispatched) const {
  // Back to source-major order, then to the ranks the rows came from.
  torch::Tensor source_major = torch::zeros_like(outputs).index_copy(0, dispatched.order, outputs);
  return all_to_all_rows(source_major, dispatched.sent_per_rank, dispatched.received_per_rank,
                         *group_);
}

}  // namespace dst

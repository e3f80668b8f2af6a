#include "deepseek_train/tensor_parallel/autograd_ops.h"

#include <torch/torch.h>

#include <cstdint>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The group travels to backward as its address: autograd contexts hold IValues only, and the
// caller guarantees the group outlives the graph.
void save_group(AutogradContext* ctx, comm::Communicator& group) {
  ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(&group));
}

comm::Communicator& saved_group(AutogradContext* ctx) {
  return *reinterpret_cast<comm::Communicator*>(
      static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
}

struct CopyToRegion : torch::autograd::Function<CopyToRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, comm::Communicator* group) {
    save_group(ctx, *group);
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_reduce_sum(grads[0], saved_group(ctx)), at::Tensor()};
  }
};

struct ReduceFromRegion : torch::autograd::Function<ReduceFromRegion> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, comm::Communicator* group) {
    return all_reduce_sum(x, *group);
  }
  static variable_list backward(AutogradContext*, variable_list grads) {
    return {grads[0], at::Tensor()};
  }
};

struct ScatterToRegion : torch::autograd::Function<ScatterToRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, comm::Communicator* group) {
    save_group(ctx, *group);
    return split_last_dim(x, *group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_gather_last_dim(grads[0], saved_group(ctx)), at::Tensor()};
  }
};

struct GatherFromRegion : torch::autograd::Function<GatherFromRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, comm::Communicator* group) {
    save_group(ctx, *group);
    return all_gather_last_dim(x, *group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {split_last_dim(grads[0], saved_group(ctx)), at::Tensor()};
  }
};

}  // namespace

at::Tensor all_reduce_sum(const at::Tensor& x, comm::Communicator& group) {
  at::Tensor result = x.contiguous().clone();
  if (group.size() > 1) group.all_reduce(result, comm::ReduceOp::kSum)->wait();
  return result;
}

at::Tensor split_last_dim(const at::Tensor& x, comm::Communicator& group) {
  const int64_t width = x.size(-1);
  DST_CHECK(
      width % group.size() == 0, ConfigError,
      "tensor parallel: last dimension " << width << " does not divide by tp=" << group.size());
  const int64_t local = width / group.size();
  return x.narrow(-1, group.rank() * local, local).contiguous();
}

at::Tensor all_gather_last_dim(const at::Tensor& x, comm::Communicator& group) {
  if (group.size() == 1) return x.contiguous();
  at::Tensor input = x.contiguous();
  std::vector<int64_t> stacked_shape{group.size()};
  for (int64_t d : x.sizes()) stacked_shape.push_back(d);
  at::Tensor gathered = at::empty({input.numel() * group.size()}, input.options());
  group.all_gather(gathered, input.view({-1}))->wait();
  return at::cat(gathered.view(stacked_shape).unbind(0), -1);
}

at::Tensor copy_to_tp_region(const at::Tensor& x, comm::Communicator& group) {
  if (group.size() == 1) return x;
  return CopyToRegion::apply(x, &group);
}

at::Tensor reduce_from_tp_region(const at::Tensor& x, comm::Communicator& group) {
  if (group.size() == 1) return x;
  return ReduceFromRegion::apply(x, &group);
}

at::Tensor scatter_to_tp_region(const at::Tensor& x, comm::Communicator& group) {
  if (group.size() == 1) return x;
  return ScatterToRegion::apply(x, &group);
}

at::Tensor gather_from_tp_region(const at::Tensor& x, comm::Communicator& group) {
  if (group.size() == 1) return x;
  return GatherFromRegion::apply(x, &group);
}

}  // namespace dst

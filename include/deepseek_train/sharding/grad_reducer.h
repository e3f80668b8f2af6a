// Data-parallel gradient reduction (ZeRO stage 0). Gradients live in flat buckets (param.grad() is
// a view into its bucket, so autograd accumulates straight into them). Buckets are filled in
// reverse parameter order, the order backward produces gradients; when the last gradient of a
// bucket has been accumulated, the bucket's all-reduce is launched asynchronously from an
// autograd hook while backward goes on. finish() waits for all of them before the optimizer step.
//
// Buckets launch strictly in order on every rank, so collectives match across ranks. The loss is
// expected to be normalised by the global token count, so buckets are summed (not averaged).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/sharding/data_parallel_options.h"

namespace dst {

class GradientReducer {
 public:
  // `parameters` must all require grad, be contiguous, share one dtype and device.
  // Gradients are reduced in `reduce_type` (e.g. fp32 for bf16 parameters: each bucket is
  // widened for the all-reduce and the sum rounded back once).
  GradientReducer(std::vector<at::Tensor> parameters, comm::CommunicatorPtr dp_group,
                  const DataParallelOptions& options, at::ScalarType reduce_type = at::kFloat);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Zeroes every gradient bucket. Call before the first micro-batch of a step.
  void zero_grad();
  // Whether the next backward is the step's last micro-batch (its hooks launch the all-reduces).
  // With false, gradients only accumulate locally (like DDP's no_sync()).
  void set_sync(bool sync);
  // After a backward: on the step's last micro-batch, launches any bucket not launched yet and
  // waits for every all-reduce; otherwise a no-op.
  void finish();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Bytes of each bucket, in launch order.
  std::vector<int64_t> bucket_bytes() const;

 private:
  struct Bucket {
    at::Tensor flat;
    at::Tensor reduce_copy;  // flat widened to the reduce dtype while it is reduced (if different)
    std::vector<int> parameter_indices;
    int pending = 0;
    comm::WorkPtr work;
  };
  void on_gradient_ready(int parameter_index);
  void launch_ready_buckets();
  // Waits for the bucket's reduction and copies a widened result back into its gradients.
  void complete(Bucket& bucket);

  std::vector<at::Tensor> parameters_;
  std::vector<int> bucket_of_parameter_;
  std::vector<Bucket> buckets_;
  comm::CommunicatorPtr group_;
  at::ScalarType reduce_type_;
  bool sync_ = true;
  int next_to_launch_ = 0;
  struct HookHandles;
  std::unique_ptr<HookHandles> hooks_;
};

}  // namespace dst

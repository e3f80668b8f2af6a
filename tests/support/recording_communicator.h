// A Communicator decorator for tests: forwards every operation to the communicator it wraps and
// records what was sent (op, dtype, elements, group) in a log shared with the communicators it
// splits off, so a test can check the dtypes a layout really reduces and gathers in.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "deepseek_train/comm/communicator.h"

namespace dst::testing {

struct RecordedOp {
  comm::OpType op;
  at::ScalarType input_type;   // the tensor sent (in place: the one reduced)
  at::ScalarType output_type;  // the tensor received into
  int64_t input_elements = 0;
  std::string group;
};
using OpLog = std::shared_ptr<std::vector<RecordedOp>>;

class RecordingCommunicator final : public comm::Communicator {
 public:
  RecordingCommunicator(comm::CommunicatorPtr inner, OpLog log)
      : inner_(std::move(inner)), log_(std::move(log)) {
    stats_ = std::shared_ptr<comm::CommStats>(inner_, &inner_->stats());  // one set of counters
    timeout_ = inner_->timeout();
  }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  std::string backend() const override { return inner_->backend(); }

  comm::WorkPtr all_reduce(at::Tensor& tensor, comm::ReduceOp op,
                           const comm::OpOptions& options = {}) override {
    record(comm::OpType::kAllReduce, tensor, tensor);
    return inner_->all_reduce(tensor, op, options);
  }
  comm::WorkPtr reduce_scatter(at::Tensor& output, const at::Tensor& input, comm::ReduceOp op,
                               const comm::OpOptions& options = {}) override {
    record(comm::OpType::kReduceScatter, input, output);
    return inner_->reduce_scatter(output, input, op, options);
  }
  comm::WorkPtr all_gather(at::Tensor& output, const at::Tensor& input,
                           const comm::OpOptions& options = {}) override {
    record(comm::OpType::kAllGather, input, output);
    return inner_->all_gather(output, input, options);
  }
  comm::WorkPtr broadcast(at::Tensor& tensor, int root,
                          const comm::OpOptions& options = {}) override {
    record(comm::OpType::kBroadcast, tensor, tensor);
    return inner_->broadcast(tensor, root, options);
  }
  comm::WorkPtr send(const at::Tensor& tensor, int dst_rank, int tag,
                     const comm::OpOptions& options = {}) override {
    record(comm::OpType::kSend, tensor, tensor);
    return inner_->send(tensor, dst_rank, tag, options);
  }
  comm::WorkPtr recv(at::Tensor& tensor, int src_rank, int tag,
                     const comm::OpOptions& options = {}) override {
    record(comm::OpType::kRecv, tensor, tensor);
    return inner_->recv(tensor, src_rank, tag, options);
  }
  comm::WorkPtr all_to_all(at::Tensor& output, const at::Tensor& input,
                           const std::vector<int64_t>& output_split_sizes,
                           const std::vector<int64_t>& input_split_sizes,
                           const comm::OpOptions& options = {}) override {
    record(comm::OpType::kAllToAll, input, output);
    return inner_->all_to_all(output, input, output_split_sizes, input_split_sizes, options);
  }
  comm::WorkPtr barrier(const comm::OpOptions& options = {}) override {
    return inner_->barrier(options);
  }
  std::shared_ptr<comm::Communicator> split(int color, int key, const std::string& name) override {
    auto part = inner_->split(color, key, name);
    if (!part) return nullptr;
    return std::make_shared<RecordingCommunicator>(std::move(part), log_);
  }

 private:
  void record(comm::OpType op, const at::Tensor& input, const at::Tensor& output) {
    log_->push_back({op, input.scalar_type(), output.scalar_type(), input.numel(), name()});
  }
  comm::CommunicatorPtr inner_;
  OpLog log_;
};

}  // namespace dst::testing

#include "deepseek_train/comm/local_communicator.h"

#include <ATen/ATen.h>

#include "deepseek_train/core/error.h"

namespace dst::comm {

namespace {

class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(std::string name) : name_(std::move(name)) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  std::string backend() const override { return "local"; }

  WorkPtr all_reduce(at::Tensor& tensor, ReduceOp, const OpOptions& = {}) override {
    count(OpType::kAllReduce);
    check(tensor, "all_reduce");
    return completed_work();
  }
  WorkPtr reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp,
                         const OpOptions& = {}) override {
    count(OpType::kReduceScatter);
    copy(output, input, "reduce_scatter");
    return completed_work();
  }
  WorkPtr all_gather(at::Tensor& output, const at::Tensor& input, const OpOptions& = {}) override {
    count(OpType::kAllGather);
    copy(output, input, "all_gather");
    return completed_work();
  }
  WorkPtr broadcast(at::Tensor& tensor, int root, const OpOptions& = {}) override {
    count(OpType::kBroadcast);
    check(tensor, "broadcast");
    DST_CHECK(root == 0, CommError,
              "broadcast on '" << name_ << "': root " << root << " is not in a group of 1");
    return completed_work();
  }
  WorkPtr send(const at::Tensor&, int dst_rank, int, const OpOptions& = {}) override {
    DST_THROW(CommError, "send on single-process communicator '"
                             << name_ << "' to rank " << dst_rank << ": there is no peer");
  }
  WorkPtr recv(at::Tensor&, int src_rank, int, const OpOptions& = {}) override {
    DST_THROW(CommError, "recv on single-process communicator '"
                             << name_ << "' from rank " << src_rank << ": there is no peer");
  }
  WorkPtr all_to_all(at::Tensor& output, const at::Tensor& input,
                     const std::vector<int64_t>& output_split_sizes,
                     const std::vector<int64_t>& input_split_sizes,
                     const OpOptions& = {}) override {
    count(OpType::kAllToAll);
    all_to_all_layout(*this, output, input, output_split_sizes, input_split_sizes);
    copy(output, input, "all_to_all");
    return completed_work();
  }
  WorkPtr barrier(const OpOptions& = {}) override {
    count(OpType::kBarrier);
    return completed_work();
  }
  std::shared_ptr<Communicator> split(int color, int, const std::string& name) override {
    if (color < 0) return nullptr;
    return std::make_shared<LocalCommunicator>(name);
  }

 private:
  void count(OpType op) { stats_->at(op).calls += 1; }
  void check(const at::Tensor& t, const char* op) const {
    DST_CHECK(t.is_contiguous(), CommError,
              op << " on '" << name_ << "': tensor is not contiguous");
  }
  void copy(at::Tensor& output, const at::Tensor& input, const char* op) const {
    check(output, op);
    check(input, op);
    DST_CHECK(output.numel() == input.numel() && output.scalar_type() == input.scalar_type(),
              CommError,
              op << " on '" << name_ << "': output has " << output.numel() << " elements, input "
                 << input.numel() << " (a group of 1 needs equal sizes and dtypes)");
    if (output.numel() > 0 && !output.is_same(input)) output.view(-1).copy_(input.view(-1));
  }

  std::string name_;
};

}  // namespace

CommunicatorPtr make_local_communicator(const std::string& name) {
  return std::make_shared<LocalCommunicator>(name);
}

}  // namespace dst::comm

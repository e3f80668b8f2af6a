#include "deepseek_train/comm/staged_communicator.h"

#include <ATen/ATen.h>

#include <functional>
#include <utility>

namespace dst::comm {

namespace {

// The wrapped operation's handle; `finish` (the copies back) runs once, on completion.
class StagedWork final : public Work {
 public:
  StagedWork(WorkPtr inner, std::function<void()> finish)
      : inner_(std::move(inner)), finish_(std::move(finish)) {}

  bool is_completed() override {
    if (!inner_->is_completed()) return false;
    complete();
    return true;
  }
  void wait(std::chrono::milliseconds timeout) override {
    inner_->wait(timeout);
    complete();
  }
  void wait() override {
    inner_->wait();
    complete();
  }

 private:
  void complete() {
    if (!finish_) return;
    auto finish = std::move(finish_);
    finish_ = nullptr;
    finish();
  }
  WorkPtr inner_;
  std::function<void()> finish_;
};

class StagedCommunicator final : public Communicator {
 public:
  StagedCommunicator(CommunicatorPtr host, bool stage_host_tensors)
      : host_(std::move(host)), stage_host_(stage_host_tensors) {
    stats_ = std::shared_ptr<CommStats>(host_, &host_->stats());
    timeout_ = host_->timeout();
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const std::string& name() const override { return host_->name(); }
  std::string backend() const override { return host_->backend() + "+staged"; }

  WorkPtr all_reduce(at::Tensor& tensor, ReduceOp op, const OpOptions& options) override {
    if (!staged(tensor)) return host_->all_reduce(tensor, op, with_timeout(options));
    at::Tensor host = to_host(tensor);
    return finish(host_->all_reduce(host, op, staged_options(options)), options,
                  [tensor, host]() mutable { tensor.copy_(host); });
  }
  WorkPtr reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op,
                         const OpOptions& options) override {
    if (!staged(output) && !staged(input))
      return host_->reduce_scatter(output, input, op, with_timeout(options));
    at::Tensor host_out = host_buffer(output), host_in = to_host(input);
    return finish(host_->reduce_scatter(host_out, host_in, op, staged_options(options)), options,
                  [output, host_out, host_in]() mutable { output.copy_(host_out); });
  }
  WorkPtr all_gather(at::Tensor& output, const at::Tensor& input,
                     const OpOptions& options) override {
    if (!staged(output) && !staged(input))
      return host_->all_gather(output, input, with_timeout(options));
    at::Tensor host_out = host_buffer(output), host_in = to_host(input);
    return finish(host_->all_gather(host_out, host_in, staged_options(options)), options,
                  [output, host_out, host_in]() mutable { output.copy_(host_out); });
  }
  WorkPtr broadcast(at::Tensor& tensor, int root, const OpOptions& options) override {
    if (!staged(tensor)) return host_->broadcast(tensor, root, with_timeout(options));
    at::Tensor host = to_host(tensor);
    return finish(host_->broadcast(host, root, staged_options(options)), options,
                  [tensor, host]() mutable { tensor.copy_(host); });
  }
  WorkPtr send(const at::Tensor& tensor, int dst_rank, int tag, const OpOptions& options) override {
    if (!staged(tensor)) return host_->send(tensor, dst_rank, tag, with_timeout(options));
    at::Tensor host = to_host(tensor);
    return finish(host_->send(host, dst_rank, tag, staged_options(options)), options, [host] {});
  }
  WorkPtr recv(at::Tensor& tensor, int src_rank, int tag, const OpOptions& options) override {
    if (!staged(tensor)) return host_->recv(tensor, src_rank, tag, with_timeout(options));
    at::Tensor host = host_buffer(tensor);
    return finish(host_->recv(host, src_rank, tag, staged_options(options)), options,
                  [tensor, host]() mutable { tensor.copy_(host); });
  }
  WorkPtr barrier(const OpOptions& options) override {
    return host_->barrier(with_timeout(options));
  }
  WorkPtr all_to_all(at::Tensor& output, const at::Tensor& input,
                     const std::vector<int64_t>& output_split_sizes,
                     const std::vector<int64_t>& input_split_sizes,
                     const OpOptions& options) override {
    if (!staged(output) && !staged(input))
      return host_->all_to_all(output, input, output_split_sizes, input_split_sizes,
                               with_timeout(options));
    at::Tensor host_out = host_buffer(output), host_in = to_host(input);
    WorkPtr inner = host_->all_to_all(host_out, host_in, output_split_sizes, input_split_sizes,
                                      staged_options(options));
    return finish(std::move(inner), options,
                  [output, host_out, host_in]() mutable { output.copy_(host_out); });
  }
  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override {
    CommunicatorPtr child = host_->split(color, key, name);
    if (!child) return nullptr;
    child->set_timeout(timeout_);
    return std::make_shared<StagedCommunicator>(std::move(child), stage_host_);
  }

 private:
  bool staged(const at::Tensor& t) const {
    return t.defined() && (!t.device().is_cpu() || stage_host_);
  }
  // Pinned host memory for a device tensor (so the copies can use DMA), plain for a host one.
  static at::Tensor host_buffer(const at::Tensor& like) {
    return at::empty(like.sizes(), like.options().device(at::kCPU).pinned_memory(like.is_cuda()));
  }
  static at::Tensor to_host(const at::Tensor& tensor) {
    at::Tensor host = host_buffer(tensor);
    host.copy_(tensor);
    return host;
  }
  // The inner op's deadline is this communicator's unless the op names one.
  OpOptions with_timeout(OpOptions options) const {
    if (options.timeout.count() == 0) options.timeout = timeout_;
    return options;
  }
  // A staged op's inner op always runs asynchronously: finish() synchronizes the whole.
  OpOptions staged_options(const OpOptions& options) const {
    OpOptions inner = with_timeout(options);
    inner.async_op = true;
    return inner;
  }
  static WorkPtr finish(WorkPtr inner, const OpOptions& options, std::function<void()> copy_back) {
    auto work = std::make_shared<StagedWork>(std::move(inner), std::move(copy_back));
    if (!options.async_op) work->synchronize();
    return work;
  }

  CommunicatorPtr host_;
  bool stage_host_;
};

}  // namespace

CommunicatorPtr make_staged_communicator(CommunicatorPtr host, bool stage_host_tensors) {
  return std::make_shared<StagedCommunicator>(std::move(host), stage_host_tensors);
}

}  // namespace dst::comm

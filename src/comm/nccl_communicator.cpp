#include "deepseek_train/comm/nccl_communicator.h"

#include <ATen/ATen.h>

#include <cstring>
#include <utility>

#include "deepseek_train/core/error.h"

#ifdef DST_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <functional>
#include <thread>

#include "deepseek_train/comm/mpi_communicator.h"
#endif

namespace dst::comm {

std::vector<uint8_t> broadcast_bootstrap_id(Communicator& group, std::vector<uint8_t> root_id) {
  at::Tensor bytes = at::zeros({static_cast<int64_t>(root_id.size())}, at::kByte);
  if (group.rank() == 0) std::memcpy(bytes.data_ptr(), root_id.data(), root_id.size());
  group.broadcast(bytes, 0)->wait();
  std::memcpy(root_id.data(), bytes.data_ptr(), root_id.size());
  return root_id;
}

#ifndef DST_WITH_CUDA

bool nccl_available() { return false; }

CommunicatorPtr make_nccl_communicator(const CommunicatorPtr&, const c10::Device&) {
  DST_THROW(ConfigError,
            "comm.backend 'nccl': this build has no CUDA/NCCL (configure with DST_WITH_CUDA=ON)");
}

#else

bool nccl_available() { return true; }

namespace {

void check_nccl(ncclResult_t result, const std::string& what) {
  DST_CHECK(result == ncclSuccess || result == ncclInProgress, CommError,
            what << " failed: " << ncclGetErrorString(result));
}

ncclDataType_t nccl_type(const at::Tensor& t, const std::string& where) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kInt:
      return ncclInt32;
    case at::kLong:
      return ncclInt64;
    case at::kByte:
      return ncclUint8;
    case at::kChar:
      return ncclInt8;
    default:
      DST_THROW(CommError, where << ": NCCL cannot move " << t.scalar_type() << " tensors");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
    default:
      return ncclSum;
  }
}

// The communicator and what its operations share; aborted once on a failure or timeout.
struct NcclState {
  explicit NcclState(const c10::Device& on)
      : device(on), stream(at::cuda::getStreamFromPool(/*isHighPriority=*/true, on.index())) {}
  NcclState(const NcclState&) = delete;
  NcclState& operator=(const NcclState&) = delete;

  ncclComm_t comm = nullptr;
  c10::Device device;
  at::cuda::CUDAStream stream;  // this communicator's own, on its device
  std::shared_ptr<CollectiveWatch> watch;
  bool aborted = false;

  ~NcclState() {
    if (!comm || aborted) return;  // ncclCommAbort already freed it
    // Work still queued (an unused prefetch, a job unwinding after an error): abort instead of
    // blocking in ncclCommDestroy until it completes.
    if (cudaStreamQuery(stream.stream()) == cudaSuccess)
      ncclCommDestroy(comm);
    else
      ncclCommAbort(comm);
  }
  void abort() {
    if (aborted || !comm) return;
    aborted = true;
    if (watch) watch->mark_failed();
    ncclCommAbort(comm);
  }
  // The communicator's asynchronous error ("" when none).
  std::string async_error() const {
    if (aborted || !comm) return "";
    ncclResult_t result = ncclSuccess;
    if (ncclCommGetAsyncError(comm, &result) != ncclSuccess) return "ncclCommGetAsyncError failed";
    if (result == ncclSuccess || result == ncclInProgress) return "";
    return ncclGetErrorString(result);
  }
};

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclState> state, std::shared_ptr<CommStats> stats, OpType op,
           std::string what, uint64_t sequence, std::chrono::milliseconds timeout)
      : state_(std::move(state)),
        stats_(std::move(stats)),
        op_(op),
        what_(std::move(what)),
        sequence_(sequence),
        timeout_(timeout) {}

  // Records the end of the operation on the communicator's stream.
  void record_end(std::vector<at::Tensor> held, std::function<void()> on_host_complete) {
    end_.record(state_->stream);
    held_ = std::move(held);
    on_host_complete_ = std::move(on_host_complete);
  }
  // Host-side results (staged host tensors) need a host wait before they can be read.
  bool has_host_results() const { return static_cast<bool>(on_host_complete_); }

  bool is_completed() override {
    if (done_) return true;
    const std::string error = state_->async_error();
    if (!error.empty()) {
      state_->abort();
      DST_THROW(CommError, what_ << " failed: " << error);
    }
    if (!end_.query()) return false;
    done_ = true;
    if (on_host_complete_) on_host_complete_();
    held_.clear();
    return true;
  }

  void wait(std::chrono::milliseconds timeout) override {
    const auto start = std::chrono::steady_clock::now();
    int polls = 0;
    while (!is_completed()) {
      if (std::chrono::steady_clock::now() - start >= timeout) {
        const std::string missing = state_->watch && sequence_ > 0
                                        ? state_->watch->missing_ranks(sequence_)
                                        : std::string("(point-to-point: no diagnosis)");
        state_->abort();
        DST_THROW(CommError, what_ << " did not complete within "
                                   << std::chrono::duration<double>(timeout).count()
                                   << " s (comm.timeout_s; NCCL communicator aborted); "
                                   << missing);
      }
      if (++polls < 200)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(polls < 2000 ? 20 : 200));
    }
    stats_->at(op_).wait_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  void wait() override { wait(timeout_); }

  // The caller's stream waits for the operation; the host does not (unless a host tensor
  // receives the result, which only the host can copy back).
  void synchronize() override {
    if (has_host_results()) return wait();
    end_.block(at::cuda::getCurrentCUDAStream(state_->device.index()));
  }

 private:
  std::shared_ptr<NcclState> state_;
  std::shared_ptr<CommStats> stats_;
  OpType op_;
  std::string what_;
  uint64_t sequence_;
  std::chrono::milliseconds timeout_;
  at::cuda::CUDAEvent end_;
  std::vector<at::Tensor> held_;
  std::function<void()> on_host_complete_;
  bool done_ = false;
};

// A tensor as NCCL sees it: on the communicator's device (a copy when the caller's is on the host;
// results are copied back when the operation completes).
struct Operand {
  at::Tensor caller;
  at::Tensor device;
  bool staged() const { return !caller.is_same(device); }
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<NcclState> state, CommunicatorPtr mirror)
      : state_(std::move(state)), mirror_(std::move(mirror)) {
    timeout_ = mirror_->timeout();
  }

  int rank() const override { return mirror_->rank(); }
  int size() const override { return mirror_->size(); }
  const std::string& name() const override { return mirror_->name(); }
  std::string backend() const override { return "nccl"; }

  WorkPtr all_reduce(at::Tensor& tensor, ReduceOp op, const OpOptions& options) override {
    const Operand t = operand(tensor, "all_reduce");
    const int64_t n = tensor.numel(), own = split_sizes(n, size())[rank()];
    const std::string what = std::string("all_reduce(") + reduce_op_name(op) + ")";
    return launch(state_, options, OpType::kAllReduce, 2 * (n - own) * tensor.element_size(), what,
                  true, {t}, {t}, [&] {
                    check_nccl(ncclAllReduce(t.device.data_ptr(), t.device.data_ptr(), n,
                                             nccl_type(tensor, what), nccl_op(op), state_->comm,
                                             state_->stream),
                               what);
                  });
  }

  WorkPtr reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op,
                         const OpOptions& options) override {
    const Operand out = operand(output, "reduce_scatter"), in = operand(input, "reduce_scatter");
    const int64_t n = input.numel();
    const std::vector<int64_t> sizes = split_sizes(n, size());
    DST_CHECK(output.numel() == sizes[rank()], CommError,
              "reduce_scatter on '" << name() << "': output has " << output.numel()
                                    << " elements, expected " << sizes[rank()] << " of " << n);
    const std::string what = std::string("reduce_scatter(") + reduce_op_name(op) + ")";
    const ncclDataType_t type = nccl_type(input, what);
    return launch(
        state_, options, OpType::kReduceScatter, (n - sizes[rank()]) * input.element_size(), what,
        true, {out, in}, {out}, [&] {
          if (n % size() == 0) {
            check_nccl(ncclReduceScatter(in.device.data_ptr(), out.device.data_ptr(), sizes[0],
                                         type, nccl_op(op), state_->comm, state_->stream),
                       what);
            return;
          }
          // Unequal parts: one reduce per owner, grouped.
          check_nccl(ncclGroupStart(), what);
          for (int r = 0; r < size(); ++r)
            check_nccl(
                ncclReduce(element(in.device, split_offset(n, size(), r)), out.device.data_ptr(),
                           sizes[r], type, nccl_op(op), r, state_->comm, state_->stream),
                what);
          check_nccl(ncclGroupEnd(), what);
        });
  }

  WorkPtr all_gather(at::Tensor& output, const at::Tensor& input,
                     const OpOptions& options) override {
    const Operand out = operand(output, "all_gather"), in = operand(input, "all_gather");
    const int64_t n = output.numel();
    const std::vector<int64_t> sizes = split_sizes(n, size());
    DST_CHECK(input.numel() == sizes[rank()], CommError,
              "all_gather on '" << name() << "': input has " << input.numel()
                                << " elements, expected " << sizes[rank()] << " of " << n);
    const ncclDataType_t type = nccl_type(input, "all_gather");
    return launch(state_, options, OpType::kAllGather, (n - sizes[rank()]) * input.element_size(),
                  "all_gather", true, {out, in}, {out}, [&] {
                    if (n % size() == 0) {
                      check_nccl(ncclAllGather(in.device.data_ptr(), out.device.data_ptr(),
                                               sizes[0], type, state_->comm, state_->stream),
                                 "all_gather");
                      return;
                    }
                    check_nccl(ncclGroupStart(), "all_gather");
                    for (int r = 0; r < size(); ++r)
                      check_nccl(ncclBroadcast(in.device.data_ptr(),
                                               element(out.device, split_offset(n, size(), r)),
                                               sizes[r], type, r, state_->comm, state_->stream),
                                 "all_gather");
                    check_nccl(ncclGroupEnd(), "all_gather");
                  });
  }

  WorkPtr broadcast(at::Tensor& tensor, int root, const OpOptions& options) override {
    const Operand t = operand(tensor, "broadcast");
    const int64_t n = tensor.numel();
    return launch(state_, options, OpType::kBroadcast, size() > 1 ? n * tensor.element_size() : 0,
                  "broadcast", true, {t}, {t}, [&] {
                    check_nccl(ncclBroadcast(t.device.data_ptr(), t.device.data_ptr(), n,
                                             nccl_type(tensor, "broadcast"), root, state_->comm,
                                             state_->stream),
                               "broadcast");
                  });
  }

  WorkPtr send(const at::Tensor& tensor, int dst_rank, int, const OpOptions& options) override {
    const Operand t = operand(tensor, "send");
    const std::string what = "send to rank " + std::to_string(dst_rank);
    const std::shared_ptr<NcclState>& on = point_to_point(dst_rank > rank());
    return launch(on, options, OpType::kSend, tensor.numel() * tensor.element_size(), what, false,
                  {t}, {}, [&] {
                    check_nccl(ncclSend(t.device.data_ptr(), tensor.numel(),
                                        nccl_type(tensor, what), dst_rank, on->comm, on->stream),
                               what);
                  });
  }

  WorkPtr recv(at::Tensor& tensor, int src_rank, int, const OpOptions& options) override {
    const Operand t = operand(tensor, "recv");
    const std::string what = "recv from rank " + std::to_string(src_rank);
    const std::shared_ptr<NcclState>& on = point_to_point(src_rank < rank());
    return launch(on, options, OpType::kRecv, 0, what, false, {t}, {t}, [&] {
      check_nccl(ncclRecv(t.device.data_ptr(), tensor.numel(), nccl_type(tensor, what), src_rank,
                          on->comm, on->stream),
                 what);
    });
  }

  WorkPtr barrier(const OpOptions& options) override {
    at::Tensor token = at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(state_->device));
    const Operand t{token, token};
    return launch(state_, options, OpType::kBarrier, 0, "barrier", true, {t}, {}, [&] {
      check_nccl(ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclInt32, ncclSum,
                               state_->comm, state_->stream),
                 "barrier");
    });
  }

  WorkPtr all_to_all(at::Tensor& output, const at::Tensor& input,
                     const std::vector<int64_t>& output_split_sizes,
                     const std::vector<int64_t>& input_split_sizes,
                     const OpOptions& options) override {
    const AllToAllLayout layout =
        all_to_all_layout(*this, output, input, output_split_sizes, input_split_sizes);
    const Operand out = operand(output, "all_to_all"), in = operand(input, "all_to_all");
    const ncclDataType_t type = nccl_type(input, "all_to_all");
    return launch(
        state_, options, OpType::kAllToAll, layout.bytes_to_others, "all_to_all", true, {out, in},
        {out}, [&] {
          check_nccl(ncclGroupStart(), "all_to_all");
          for (int r = 0; r < size(); ++r) {
            if (layout.send_elements[r] > 0)
              check_nccl(ncclSend(element(in.device, layout.send_offsets[r]),
                                  layout.send_elements[r], type, r, state_->comm, state_->stream),
                         "all_to_all");
            if (layout.recv_elements[r] > 0)
              check_nccl(ncclRecv(element(out.device, layout.recv_offsets[r]),
                                  layout.recv_elements[r], type, r, state_->comm, state_->stream),
                         "all_to_all");
          }
          check_nccl(ncclGroupEnd(), "all_to_all");
        });
  }

  bool stream_ordered() const override { return true; }

  // Two communicators of the same ranks, one per direction (to a higher rank, to a lower one):
  // NCCL runs a communicator's operations in issue order and a send waits for its receive, so
  // a pipeline schedule whose sends and receives interleave differently on two ranks (1F1B)
  // would block both on one communicator; per direction every pair's messages match in order.
  void prepare_point_to_point() override {
    if (upward_) return;
    upward_ = split_state(0, rank(), "point-to-point upward");
    downward_ = split_state(0, rank(), "point-to-point downward");
  }

  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override {
    CommunicatorPtr child_mirror = mirror_->split(color, key, name);
    std::shared_ptr<NcclState> state =
        split_state(color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, "into '" + name + "'");
    if (!child_mirror) return nullptr;
    state->watch = collective_watch(*child_mirror, "nccl");
    child_mirror->set_timeout(timeout_);
    return std::make_shared<NcclCommunicator>(std::move(state), std::move(child_mirror));
  }

 private:
  static void* element(const at::Tensor& t, int64_t offset) {
    return static_cast<char*>(t.data_ptr()) + offset * t.element_size();
  }

  Operand operand(const at::Tensor& tensor, const char* op) const {
    DST_CHECK(tensor.defined(), CommError, op << " on '" << name() << "': undefined tensor");
    DST_CHECK(tensor.is_contiguous(), CommError,
              op << " on '" << name() << "': tensor is not contiguous");
    if (tensor.device() == state_->device) return {tensor, tensor};
    DST_CHECK(tensor.device().is_cpu(), CommError,
              op << " on '" << name() << "': tensor on " << tensor.device()
                 << ", the communicator's device is " << state_->device);
    return {tensor, tensor.to(state_->device)};
  }

  // Counts and records the op, orders it after the caller's work, enqueues it on the
  // communicator's stream and returns its Work. `outputs` staged on the device are copied back to
  // the caller's host tensors when the op completes.
  WorkPtr launch(const std::shared_ptr<NcclState>& on, const OpOptions& options, OpType op,
                 int64_t bytes, const std::string& what, bool collective,
                 const std::vector<Operand>& operands, const std::vector<Operand>& outputs,
                 const std::function<void()>& enqueue) {
    c10::cuda::CUDAGuard guard(on->device);
    OpStats& counters = stats_->at(op);
    counters.calls += 1;
    counters.bytes += static_cast<uint64_t>(bytes);
    const uint64_t sequence = collective && on->watch ? on->watch->enter(what) : 0;
    const std::string described = what + (sequence ? " #" + std::to_string(sequence) : "") +
                                  " on '" + name() + "' (" +
                                  (on->watch ? on->watch->describe_self() : "") + ")";
    at::cuda::CUDAEvent ready;
    ready.record(at::cuda::getCurrentCUDAStream(on->device.index()));
    ready.block(on->stream);
    enqueue();
    std::vector<at::Tensor> held;
    std::vector<std::pair<at::Tensor, at::Tensor> > copies;
    for (const Operand& o : operands) {
      c10::cuda::CUDACachingAllocator::recordStream(o.device.storage().data_ptr(), on->stream);
      held.push_back(o.device);
      held.push_back(o.caller);
    }
    for (const Operand& o : outputs)
      if (o.staged()) copies.emplace_back(o.caller, o.device);
    auto work =
        std::make_shared<NcclWork>(on, stats_, op, described, sequence,
                                   options.timeout.count() > 0 ? options.timeout : timeout_);
    std::function<void()> copy_back;
    if (!copies.empty())
      copy_back = [copies]() mutable {
        for (auto& [caller, device] : copies) caller.copy_(device);
      };
    work->record_end(std::move(held), std::move(copy_back));
    if (!options.async_op) work->synchronize();
    return work;
  }

  // The state a send towards a higher rank / a receive from a lower one (upward) or the reverse
  // runs on: the directional ones after prepare_point_to_point, else the communicator's own.
  const std::shared_ptr<NcclState>& point_to_point(bool upward) const {
    if (!upward_) return state_;
    return upward ? upward_ : downward_;
  }
  // The NCCL communicator of the ranks with `color` (NCCL_SPLIT_NOCOLOR: none for this rank,
  // whose state then holds no communicator), ordered by key, on a stream of its own. Collective.
  std::shared_ptr<NcclState> split_state(int color, int key, const std::string& what) {
    c10::cuda::CUDAGuard guard(state_->device);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    auto state = std::make_shared<NcclState>(state_->device);
    check_nccl(ncclCommSplit(state_->comm, color, key, &state->comm, &config),
               "ncclCommSplit of '" + name() + "' " + what);
    return state;
  }

  std::shared_ptr<NcclState> state_;
  std::shared_ptr<NcclState> upward_, downward_;  // prepare_point_to_point
  CommunicatorPtr mirror_;  // the MPI group of the same ranks (watchdog, splits)
};

}  // namespace

CommunicatorPtr make_nccl_communicator(const CommunicatorPtr& bootstrap,
                                       const c10::Device& device) {
  DST_CHECK(device.is_cuda() && device.has_index(), ConfigError,
            "the NCCL backend needs a CUDA device, got " << device);
  c10::cuda::CUDAGuard guard(device);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (bootstrap->rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  const std::vector<uint8_t> bytes = broadcast_bootstrap_id(
      *bootstrap, std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&id),
                                       reinterpret_cast<uint8_t*>(&id) + sizeof(id)));
  std::memcpy(&id, bytes.data(), sizeof(id));
  auto state = std::make_shared<NcclState>(device);
  check_nccl(ncclCommInitRank(&state->comm, bootstrap->size(), id, bootstrap->rank()),
             "ncclCommInitRank on '" + bootstrap->name() + "'");
  state->watch = collective_watch(*bootstrap, "nccl");
  return std::make_shared<NcclCommunicator>(std::move(state), bootstrap);
}

#endif  // DST_WITH_CUDA

}  // namespace dst::comm

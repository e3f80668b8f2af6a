// The Communicator interface: collectives over a group of ranks, each returning a Work handle so
// callers issue early and wait late (compute/communication overlap). Backends: MPI (CPU tensors),
// a single-process one for tests, MPI staged through host memory and NCCL for CUDA tensors (on
// streams) — callers never change.
//
// Tensors must be contiguous. Flat-buffer collectives split a buffer of n elements among the p
// ranks of the group with split_sizes(n, p): rank i gets n/p elements, plus one if i < n % p.
//
// Byte accounting (CommStats) counts the bytes each rank sends under a ring algorithm, so the
// figures match the textbook formulas: all_reduce 2·(n − own)·elem, reduce_scatter and all_gather
// (n − own)·elem, broadcast n·elem, send n·elem, all_to_all the rows sent to other ranks;
// barrier and recv 0.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dst::comm {

enum class ReduceOp { kSum, kAvg, kMax };

enum class OpType : int {
  kAllReduce = 0,
  kReduceScatter,
  kAllGather,
  kBroadcast,
  kSend,
  kRecv,
  kBarrier,
  kAllToAll,
};
constexpr int kNumOpTypes = 8;
const char* op_name(OpType op);
const char* reduce_op_name(ReduceOp op);

struct OpStats {
  uint64_t calls = 0;
  uint64_t bytes = 0;         // bytes sent by this rank (ring-algorithm accounting)
  double wait_seconds = 0.0;  // time spent blocked in Work::wait()
};

// Per-op counters of one communicator. Shared with its Work handles.
class CommStats {
 public:
  OpStats& at(OpType op) { return ops_[static_cast<int>(op)]; }
  const OpStats& at(OpType op) const { return ops_[static_cast<int>(op)]; }
  uint64_t total_bytes() const;
  double total_wait_seconds() const;
  void reset() { ops_ = {}; }
  // Adds another communicator's counters into this one (for reporting several groups together).
  void accumulate(const CommStats& other);

 private:
  std::array<OpStats, kNumOpTypes> ops_{};
};

// Options of one operation (c10d's per-op Options structs, reduced to what every op shares).
struct OpOptions {
  // Deadline of this operation's wait(); zero: the communicator's (comm.timeout_s).
  std::chrono::milliseconds timeout{0};
  // False: the operation is synchronize()d before the call returns (later work is ordered after
  // it); the returned Work is then complete on host-completed backends.
  bool async_op = true;
};

// Handle of an asynchronous operation.
class Work {
 public:
  virtual ~Work() = default;
  // Non-blocking completion test (also drives progress for backends that need polling).
  virtual bool is_completed() = 0;
  // Blocks until completion; throws CommError naming the op when `timeout` passes first.
  virtual void wait(std::chrono::milliseconds timeout) = 0;
  // Waits with the communicator's default timeout.
  virtual void wait() = 0;
  // Orders whatever the caller does next after this operation (c10d's Work::synchronize): for
  // backends whose operations complete on the host (MPI, single-process) this is wait(); a
  // stream-based backend (NCCL) makes the caller's current stream wait for the operation instead,
  // without blocking the host. Use wait() when the host itself must see the result.
  virtual void synchronize() { wait(); }
};
using WorkPtr = std::shared_ptr<Work>;

// A Work that is already complete (empty tensors, single-process groups).
WorkPtr completed_work();

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // A label for logs and errors ("world", "dp", ...).
  virtual const std::string& name() const = 0;
  virtual std::string backend() const = 0;

  // In place. kAvg divides by size() (integers: truncating division).
  virtual WorkPtr all_reduce(at::Tensor& tensor, ReduceOp op, const OpOptions& options = {}) = 0;
  // input: the full flat buffer (n elements); output: this rank's split_sizes(n, size())[rank()].
  virtual WorkPtr reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op,
                                 const OpOptions& options = {}) = 0;
  // output: the full flat buffer (n elements); input: this rank's split_sizes(n, size())[rank()].
  virtual WorkPtr all_gather(at::Tensor& output, const at::Tensor& input,
                             const OpOptions& options = {}) = 0;
  virtual WorkPtr broadcast(at::Tensor& tensor, int root, const OpOptions& options = {}) = 0;
  virtual WorkPtr send(const at::Tensor& tensor, int dst_rank, int tag,
                       const OpOptions& options = {}) = 0;
  virtual WorkPtr recv(at::Tensor& tensor, int src_rank, int tag,
                       const OpOptions& options = {}) = 0;
  virtual WorkPtr barrier(const OpOptions& options = {}) = 0;
  // Rows of dim 0 exchanged between every pair of ranks (c10d's alltoall_base): this rank sends
  // input rows [sum of input_split_sizes[0..r), + input_split_sizes[r]) to rank r and receives
  // output_split_sizes[r] rows from rank r, stored in rank order. Empty split sizes mean equal
  // splits (dim 0 divisible by size()). The sizes must agree across ranks (what a sends b is what b
  // receives from a); input and output share dtype and row shape. See all_to_all_layout.
  virtual WorkPtr all_to_all(at::Tensor& output, const at::Tensor& input,
                             const std::vector<int64_t>& output_split_sizes,
                             const std::vector<int64_t>& input_split_sizes,
                             const OpOptions& options = {}) = 0;

  // Collective: sets up what send/recv need before a schedule of them (NCCL: a communicator per
  // direction, so differently interleaved sends and receives on two ranks cannot block each
  // other). Host backends need nothing.
  virtual void prepare_point_to_point() {}
  // True when operations complete on device streams (NCCL): Work::synchronize() orders the
  // caller's stream without a host wait, so a collective can be chained on another's completion
  // at launch time (ZeRO's HSDP replica sums are).
  virtual bool stream_ordered() const { return false; }

  // Collective over this group: ranks with the same color form a new communicator, ordered by
  // key (ties by current rank). A negative color returns nullptr for that rank.
  virtual std::shared_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  CommStats& stats() { return *stats_; }
  const CommStats& stats() const { return *stats_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }

 protected:
  std::shared_ptr<CommStats> stats_ = std::make_shared<CommStats>();
  std::chrono::milliseconds timeout_{std::chrono::minutes(5)};
};
using CommunicatorPtr = std::shared_ptr<Communicator>;

// An all_to_all's elements per peer, checked against the tensors: one-line CommError naming the
// group and what is wrong (split count, negative size, rows that do not add up, dtype or row shape
// mismatch).
struct AllToAllLayout {
  std::vector<int64_t> send_elements, send_offsets;  // per rank, in input elements
  std::vector<int64_t> recv_elements, recv_offsets;  // per rank, in output elements
  int64_t bytes_to_others = 0;                       // what this rank sends to the other ranks
};
AllToAllLayout all_to_all_layout(const Communicator& group, const at::Tensor& output,
                                 const at::Tensor& input,
                                 const std::vector<int64_t>& output_split_sizes,
                                 const std::vector<int64_t>& input_split_sizes);

// Element counts of each rank's part of an n-element flat buffer split over p ranks.
std::vector<int64_t> split_sizes(int64_t n, int p);
// Offset of rank's part in the flat buffer.
int64_t split_offset(int64_t n, int p, int rank);

// Blocks on every handle (nulls skipped), in order.
void wait_all(const std::vector<WorkPtr>& works);

}  // namespace dst::comm

#include "deepseek_train/comm/communicator.h"

#include "deepseek_train/core/error.h"

namespace dst::comm {

const char* op_name(OpType op) {
  switch (op) {
    case OpType::kAllReduce:
      return "all_reduce";
    case OpType::kReduceScatter:
      return "reduce_scatter";
    case OpType::kAllGather:
      return "all_gather";
    case OpType::kBroadcast:
      return "broadcast";
    case OpType::kSend:
      return "send";
    case OpType::kRecv:
      return "recv";
    case OpType::kBarrier:
      return "barrier";
  }
  return "?";
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

uint64_t CommStats::total_bytes() const {
  uint64_t total = 0;
  for (const OpStats& op : ops_) total += op.bytes;
  return total;
}

double CommStats::total_wait_seconds() const {
  double total = 0;
  for (const OpStats& op : ops_) total += op.wait_seconds;
  return total;
}

void CommStats::accumulate(const CommStats& other) {
  for (int i = 0; i < kNumOpTypes; ++i) {
    ops_[i].calls += other.ops_[i].calls;
    ops_[i].bytes += other.ops_[i].bytes;
    ops_[i].wait_seconds += other.ops_[i].wait_seconds;
  }
}

namespace {
class CompletedWork final : public Work {
 public:
  bool is_completed() override { return true; }
  void wait(std::chrono::milliseconds) override {}
  void wait() override {}
};
}  // namespace

WorkPtr completed_work() { return std::make_shared<CompletedWork>(); }

std::vector<int64_t> split_sizes(int64_t n, int p) {
  DST_CHECK(p > 0 && n >= 0, CommError, "split_sizes(" << n << ", " << p << "): invalid arguments");
  std::vector<int64_t> sizes(p, n / p);
  for (int i = 0; i < n % p; ++i) sizes[i] += 1;
  return sizes;
}

int64_t split_offset(int64_t n, int p, int rank) {
  DST_CHECK(rank >= 0 && rank < p, CommError,
            "split_offset: rank " << rank << " not in [0, " << p << ")");
  const int64_t base = n / p;
  const int64_t extra = n % p;
  return rank * base + std::min<int64_t>(rank, extra);
}

void wait_all(const std::vector<WorkPtr>& works) {
  for (const WorkPtr& work : works)
    if (work) work->wait();
}

}  // namespace dst::comm

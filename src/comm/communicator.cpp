#include "deepseek_train/comm/communicator.h"

#include <ATen/core/Tensor.h>

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
    case OpType::kAllToAll:
      return "all_to_all";
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

namespace {

// Rows per rank: the given split sizes, or dim 0 split equally.
std::vector<int64_t> rows_per_rank(const Communicator& group, const at::Tensor& t,
                                   const std::vector<int64_t>& split_sizes, const char* which) {
  const int p = group.size();
  const int64_t rows = t.dim() == 0 ? 1 : t.size(0);
  if (split_sizes.empty()) {
    DST_CHECK(rows % p == 0, CommError,
              "all_to_all on '" << group.name() << "': " << which << " has " << rows
                                << " rows, not divisible by " << p << " ranks; give split sizes");
    return std::vector<int64_t>(static_cast<size_t>(p), rows / p);
  }
  DST_CHECK(static_cast<int>(split_sizes.size()) == p, CommError,
            "all_to_all on '" << group.name() << "': " << split_sizes.size() << " " << which
                              << " split sizes for " << p << " ranks");
  int64_t total = 0;
  for (int64_t n : split_sizes) {
    DST_CHECK(n >= 0, CommError,
              "all_to_all on '" << group.name() << "': negative " << which << " split size " << n);
    total += n;
  }
  DST_CHECK(total == rows, CommError,
            "all_to_all on '" << group.name() << "': " << which << " split sizes add up to "
                              << total << " rows, the " << which << " has " << rows);
  return split_sizes;
}

void to_elements(const std::vector<int64_t>& rows, int64_t row_elements,
                 std::vector<int64_t>* elements, std::vector<int64_t>* offsets) {
  int64_t offset = 0;
  for (int64_t n : rows) {
    elements->push_back(n * row_elements);
    offsets->push_back(offset);
    offset += n * row_elements;
  }
}

}  // namespace

AllToAllLayout all_to_all_layout(const Communicator& group, const at::Tensor& output,
                                 const at::Tensor& input,
                                 const std::vector<int64_t>& output_split_sizes,
                                 const std::vector<int64_t>& input_split_sizes) {
  DST_CHECK(output.defined() && input.defined(), CommError,
            "all_to_all on '" << group.name() << "': undefined tensor");
  DST_CHECK(output.scalar_type() == input.scalar_type(), CommError,
            "all_to_all on '" << group.name() << "': output dtype " << output.scalar_type()
                              << " differs from input dtype " << input.scalar_type());
  const auto row_shape = [](const at::Tensor& t) {
    return t.dim() <= 1 ? std::vector<int64_t>{} : t.sizes().slice(1).vec();
  };
  DST_CHECK(row_shape(output) == row_shape(input), CommError,
            "all_to_all on '" << group.name() << "': output rows are " << output.sizes()
                              << ", input rows " << input.sizes()
                              << " (dims after the first differ)");
  int64_t row_elements = 1;
  for (int64_t d : row_shape(input)) row_elements *= d;
  AllToAllLayout layout;
  const auto send_rows = rows_per_rank(group, input, input_split_sizes, "input");
  const auto recv_rows = rows_per_rank(group, output, output_split_sizes, "output");
  to_elements(send_rows, row_elements, &layout.send_elements, &layout.send_offsets);
  to_elements(recv_rows, row_elements, &layout.recv_elements, &layout.recv_offsets);
  for (int r = 0; r < group.size(); ++r)
    if (r != group.rank())
      layout.bytes_to_others +=
          layout.send_elements[r] * static_cast<int64_t>(input.element_size());
  return layout;
}

}  // namespace dst::comm

#include "deepseek_train/comm/mpi_communicator.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "deepseek_train/comm/watchdog.h"
#include "deepseek_train/core/error.h"

namespace dst::comm {

namespace {

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

std::string mpi_error_string(int code) {
  char buffer[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, buffer, &length);
  return std::string(buffer, length);
}

// User-defined maxima for 16-bit floats (exact in any order). 16-bit sums are not reduced in 16
// bits: they travel as fp32 and are rounded once (MpiCommunicator::on_the_wire).
template <typename Half>
void max_16bit(void* in, void* inout, int* len, MPI_Datatype*) {
  const Half* a = static_cast<const Half*>(in);
  Half* b = static_cast<Half*>(inout);
  for (int i = 0; i < *len; ++i)
    b[i] = Half(std::max(static_cast<float>(a[i]), static_cast<float>(b[i])));
}

// MPI objects shared by a world communicator and everything split from it.
struct MpiTypes {
  MPI_Datatype half_type = MPI_DATATYPE_NULL;  // 2 opaque bytes, interpreted by the ops below
  MPI_Op bf16_max = MPI_OP_NULL, f16_max = MPI_OP_NULL;

  MpiTypes() {
    MPI_Type_contiguous(2, MPI_BYTE, &half_type);
    MPI_Type_commit(&half_type);
    MPI_Op_create(&max_16bit<c10::BFloat16>, 1, &bf16_max);
    MPI_Op_create(&max_16bit<c10::Half>, 1, &f16_max);
  }
  ~MpiTypes() {
    if (mpi_finalized()) return;
    for (MPI_Op* op : {&bf16_max, &f16_max}) MPI_Op_free(op);
    MPI_Type_free(&half_type);
  }
};

}  // namespace

// Every world rank's `text` (at most 255 bytes). Collective over MPI_COMM_WORLD.
std::vector<std::string> all_gather_strings(std::string text) {
  constexpr int kBytes = 256;
  text.resize(kBytes, '\0');
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::string all(static_cast<size_t>(kBytes) * size, '\0');
  MPI_Allgather(text.data(), kBytes, MPI_CHAR, all.data(), kBytes, MPI_CHAR, MPI_COMM_WORLD);
  std::vector<std::string> result;
  for (int r = 0; r < size; ++r) result.emplace_back(all.c_str() + r * kBytes);
  return result;
}

// What every communicator of one MPI job shares: the 16-bit types and reductions, and the hang
// watchdog's board, side channel, the job's side-channel token and every world rank's address.
struct MpiJobContext {
  MpiTypes types;
  std::shared_ptr<ProgressBoard> board = std::make_shared<ProgressBoard>();
  std::unique_ptr<SideChannel> side_channel;
  std::string token;                   // the same on every rank (drawn by world rank 0)
  std::vector<std::string> addresses;  // by world rank
  std::mutex mutex;
  std::map<std::string, int> groups_created;  // first key of a label + members -> how many so far

  // Collective over MPI_COMM_WORLD: draws the job's token on rank 0 and shares it, starts this
  // rank's side channel (on loopback when the job is on one host) and learns everyone's.
  MpiJobContext() {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    token = rank == 0 ? random_job_token() : std::string(64, '\0');
    token.resize(64, '\0');
    MPI_Bcast(token.data(), 64, MPI_CHAR, 0, MPI_COMM_WORLD);
    SideChannelOptions options;
    options.bind_host = side_channel_bind_host(all_gather_strings(local_host_name()));
    options.token = token;
    side_channel = std::make_unique<SideChannel>(board, options);
    addresses = all_gather_strings(side_channel->address());
  }

  // The group key (watchdog.h) of a new communicator with these members.
  std::string key_for(const std::string& label, const std::vector<int>& world_ranks) {
    std::lock_guard<std::mutex> lock(mutex);
    return group_key(label, world_ranks, groups_created[group_key(label, world_ranks, 0)]++);
  }
};

namespace {

// Seconds the watchdog gives each rank's side channel to answer.
constexpr std::chrono::milliseconds kSideChannelTimeout{3000};

class MpiWork final : public Work {
 public:
  // `timeout_source` names where the deadline came from in the timeout error.
  MpiWork(std::shared_ptr<CommStats> stats, OpType op, std::string what,
          std::chrono::milliseconds timeout, const char* timeout_source,
          std::shared_ptr<ProgressBoard> board, std::function<std::string()> diagnose)
      : stats_(std::move(stats)),
        op_(op),
        what_(std::move(what)),
        timeout_(timeout),
        timeout_source_(timeout_source),
        board_(std::move(board)),
        diagnose_(std::move(diagnose)) {}

  ~MpiWork() override {
    if (done_ || request_ == MPI_REQUEST_NULL || mpi_finalized()) return;
    // A failed job is being torn down: waiting again would only delay the abort.
    if (board_->failed()) return;
    try {
      wait(timeout_);
    } catch (const std::exception&) {
      // A destructor cannot report; the request is abandoned (the job is failing anyway).
    }
  }

  bool is_completed() override {
    if (done_) return true;
    int flag = 0;
    const int rc = MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      board_->mark_failed();
      DST_THROW(CommError, what_ << " failed: " << mpi_error_string(rc));
    }
    if (flag) {
      done_ = true;
      if (on_complete) on_complete();
      keep_alive.clear();
    }
    return done_;
  }

  void wait(std::chrono::milliseconds timeout) override {
    if (done_) return;
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + timeout;
    int polls = 0;
    while (!is_completed()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        stats_->at(op_).wait_seconds += std::chrono::duration<double>(now - start).count();
        board_->mark_failed();
        DST_THROW(CommError, what_ << " did not complete within "
                                   << std::chrono::duration<double>(timeout).count() << " s ("
                                   << timeout_source_ << "); " << diagnose_());
      }
      // Spin briefly for latency, then back off so oversubscribed ranks leave the cores to
      // the ranks still computing.
      if (++polls < 200) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(polls < 2000 ? 20 : 200));
      }
    }
    stats_->at(op_).wait_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  void wait() override { wait(timeout_); }

  MPI_Request request_ = MPI_REQUEST_NULL;
  std::function<void()> on_complete;
  std::vector<at::Tensor> keep_alive;                // buffers MPI reads or writes until completion
  std::vector<int> counts, displacements;            // received (all_gather, all_to_all)
  std::vector<int> send_counts, send_displacements;  // sent (all_to_all)

 private:
  std::shared_ptr<CommStats> stats_;
  OpType op_;
  std::string what_;
  std::chrono::milliseconds timeout_;
  const char* timeout_source_;
  std::shared_ptr<ProgressBoard> board_;
  std::function<std::string()> diagnose_;
  bool done_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::string name, std::shared_ptr<MpiJobContext> context)
      : comm_(comm), name_(std::move(name)), context_(std::move(context)) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    // Members' world ranks, for the watchdog's report and its side-channel addresses.
    MPI_Group group = MPI_GROUP_NULL, world_group = MPI_GROUP_NULL;
    MPI_Comm_group(comm_, &group);
    MPI_Comm_group(MPI_COMM_WORLD, &world_group);
    std::vector<int> ranks(size_);
    for (int r = 0; r < size_; ++r) ranks[r] = r;
    world_ranks_.resize(size_);
    MPI_Group_translate_ranks(group, size_, ranks.data(), world_group, world_ranks_.data());
    MPI_Group_free(&group);
    MPI_Group_free(&world_group);
    key_ = context_->key_for(name_, world_ranks_);
    auto members = std::make_shared<std::vector<GroupMember>>();
    for (int r = 0; r < size_; ++r)
      members->push_back({r, world_ranks_[r], context_->addresses[world_ranks_[r]]});
    members_ = std::move(members);
  }
  ~MpiCommunicator() override {
    if (!mpi_finalized()) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  std::string backend() const override { return "mpi"; }

  WorkPtr all_reduce(at::Tensor& tensor, ReduceOp op, const OpOptions& options = {}) override {
    check_tensor(tensor, "all_reduce");
    const int64_t n = tensor.numel();
    const int64_t own = split_sizes(n, size_)[rank_];
    const at::Tensor wire = on_the_wire(tensor, op);
    auto work = start(options, OpType::kAllReduce, 2 * (n - own) * wire.element_size(),
                      std::string("all_reduce(") + reduce_op_name(op) + ")");
    if (n == 0) return completed_work();
    work->keep_alive = {tensor, wire};
    check_rc(MPI_Iallreduce(MPI_IN_PLACE, wire.data_ptr(), to_count(n, "all_reduce"),
                            mpi_type(wire), mpi_op(op, wire), comm_, &work->request_),
             "all_reduce");
    work->on_complete = finish_reduction(tensor, wire, op);
    return issued(work, options);
  }

  WorkPtr reduce_scatter(at::Tensor& output, const at::Tensor& input, ReduceOp op,
                         const OpOptions& options = {}) override {
    check_tensor(output, "reduce_scatter");
    check_tensor(input, "reduce_scatter");
    check_same_dtype(output, input, "reduce_scatter");
    const int64_t n = input.numel();
    const std::vector<int64_t> sizes = split_sizes(n, size_);
    DST_CHECK(output.numel() == sizes[rank_], CommError,
              "reduce_scatter on '" << name_ << "': rank " << rank_ << " output has "
                                    << output.numel() << " elements, expected " << sizes[rank_]
                                    << " of " << n);
    const at::Tensor wire_input = on_the_wire(input, op);
    const at::Tensor wire_output =
        wire_input.is_same(input) ? output : at::empty({output.numel()}, wire_input.options());
    auto work =
        start(options, OpType::kReduceScatter, (n - sizes[rank_]) * wire_input.element_size(),
              std::string("reduce_scatter(") + reduce_op_name(op) + ")");
    if (n == 0) return completed_work();
    work->counts = to_counts(sizes, "reduce_scatter");
    work->keep_alive = {output, input, wire_input, wire_output};
    check_rc(
        MPI_Ireduce_scatter(wire_input.data_ptr(), wire_output.data_ptr(), work->counts.data(),
                            mpi_type(wire_input), mpi_op(op, wire_input), comm_, &work->request_),
        "reduce_scatter");
    work->on_complete = finish_reduction(output, wire_output, op);
    return issued(work, options);
  }

  WorkPtr all_gather(at::Tensor& output, const at::Tensor& input,
                     const OpOptions& options = {}) override {
    check_tensor(output, "all_gather");
    check_tensor(input, "all_gather");
    check_same_dtype(output, input, "all_gather");
    const int64_t n = output.numel();
    const std::vector<int64_t> sizes = split_sizes(n, size_);
    DST_CHECK(input.numel() == sizes[rank_], CommError,
              "all_gather on '" << name_ << "': rank " << rank_ << " input has " << input.numel()
                                << " elements, expected " << sizes[rank_] << " of " << n);
    auto work =
        start(options, OpType::kAllGather, (n - sizes[rank_]) * input.element_size(), "all_gather");
    if (n == 0) return completed_work();
    work->counts = to_counts(sizes, "all_gather");
    work->displacements.resize(size_);
    for (int r = 0; r < size_; ++r)
      work->displacements[r] = static_cast<int>(split_offset(n, size_, r));
    work->keep_alive = {output, input};
    const char* own_slot = static_cast<const char*>(output.data_ptr()) +
                           work->displacements[rank_] * output.element_size();
    const void* send = input.data_ptr() == own_slot ? MPI_IN_PLACE : input.data_ptr();
    check_rc(MPI_Iallgatherv(send, work->counts[rank_], mpi_type(input), output.data_ptr(),
                             work->counts.data(), work->displacements.data(), mpi_type(output),
                             comm_, &work->request_),
             "all_gather");
    return issued(work, options);
  }

  WorkPtr broadcast(at::Tensor& tensor, int root, const OpOptions& options = {}) override {
    check_tensor(tensor, "broadcast");
    check_peer(root, "broadcast");
    const int64_t n = tensor.numel();
    auto work =
        start(options, OpType::kBroadcast, size_ > 1 ? n * tensor.element_size() : 0, "broadcast");
    if (n == 0) return completed_work();
    work->keep_alive = {tensor};
    check_rc(MPI_Ibcast(tensor.data_ptr(), to_count(n, "broadcast"), mpi_type(tensor), root, comm_,
                        &work->request_),
             "broadcast");
    return issued(work, options);
  }

  WorkPtr send(const at::Tensor& tensor, int dst_rank, int tag,
               const OpOptions& options = {}) override {
    check_tensor(tensor, "send");
    check_peer(dst_rank, "send");
    auto work =
        start(options, OpType::kSend, tensor.numel() * tensor.element_size(), "send", dst_rank);
    work->keep_alive = {tensor};
    check_rc(MPI_Isend(tensor.data_ptr(), to_count(tensor.numel(), "send"), mpi_type(tensor),
                       dst_rank, tag, comm_, &work->request_),
             "send");
    return issued(work, options);
  }

  WorkPtr recv(at::Tensor& tensor, int src_rank, int tag, const OpOptions& options = {}) override {
    check_tensor(tensor, "recv");
    check_peer(src_rank, "recv");
    auto work = start(options, OpType::kRecv, 0, "recv", src_rank);
    work->keep_alive = {tensor};
    check_rc(MPI_Irecv(tensor.data_ptr(), to_count(tensor.numel(), "recv"), mpi_type(tensor),
                       src_rank, tag, comm_, &work->request_),
             "recv");
    return issued(work, options);
  }

  WorkPtr all_to_all(at::Tensor& output, const at::Tensor& input,
                     const std::vector<int64_t>& output_split_sizes,
                     const std::vector<int64_t>& input_split_sizes,
                     const OpOptions& options = {}) override {
    check_tensor(output, "all_to_all");
    check_tensor(input, "all_to_all");
    const AllToAllLayout layout =
        all_to_all_layout(*this, output, input, output_split_sizes, input_split_sizes);
    auto work = start(options, OpType::kAllToAll, layout.bytes_to_others, "all_to_all");
    work->keep_alive = {output, input};
    work->counts = to_counts(layout.recv_elements, "all_to_all");
    work->displacements = to_counts(layout.recv_offsets, "all_to_all");
    work->send_counts = to_counts(layout.send_elements, "all_to_all");
    work->send_displacements = to_counts(layout.send_offsets, "all_to_all");
    check_rc(
        MPI_Ialltoallv(input.data_ptr(), work->send_counts.data(), work->send_displacements.data(),
                       mpi_type(input), output.data_ptr(), work->counts.data(),
                       work->displacements.data(), mpi_type(output), comm_, &work->request_),
        "all_to_all");
    return issued(work, options);
  }

  WorkPtr barrier(const OpOptions& options = {}) override {
    auto work = start(options, OpType::kBarrier, 0, "barrier");
    check_rc(MPI_Ibarrier(comm_, &work->request_), "barrier");
    return issued(work, options);
  }

  // This group's watchdog for another backend's operations (collective_watch).
  std::shared_ptr<CollectiveWatch> make_watch(const std::string& suffix) const;

  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override {
    MPI_Comm child = MPI_COMM_NULL;
    check_rc(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &child), "split");
    if (child == MPI_COMM_NULL) return nullptr;
    auto result = std::make_shared<MpiCommunicator>(child, name, context_);
    result->set_timeout(timeout_);
    return result;
  }

 private:
  // An operation's Work as the options want it: synchronized before returning when not async.
  static WorkPtr issued(const std::shared_ptr<MpiWork>& work, const OpOptions& options) {
    if (!options.async_op) work->synchronize();
    return work;
  }

  // Counts the op, records on the watchdog board that this rank entered it (collectives only:
  // point-to-point ops are not matched by every member) and makes its Work, whose wait() has the
  // options' timeout (the communicator's when zero).
  std::shared_ptr<MpiWork> start(const OpOptions& options, OpType op, int64_t bytes,
                                 const std::string& what, int peer = -1) {
    OpStats& stats = stats_->at(op);
    stats.calls += 1;
    stats.bytes += static_cast<uint64_t>(bytes);
    const bool collective = peer < 0;
    std::string description = what;
    std::function<std::string()> diagnose;
    if (collective) {
      const uint64_t sequence = ++sequence_;
      context_->board->entered(key_, sequence, what);
      description += " #" + std::to_string(sequence);
      diagnose = [key = key_, members = members_, sequence, token = context_->token] {
        return name_missing_ranks(key, sequence, *members, token, kSideChannelTimeout);
      };
    } else {
      description += std::string(op == OpType::kSend ? " to" : " from") + " rank " +
                     std::to_string(peer) + " (world rank " + std::to_string(world_ranks_[peer]) +
                     ")";
      diagnose = [key = key_, member = (*members_)[peer], sequence = sequence_,
                  token = context_->token] { return describe_peer(key, member, token, sequence); };
    }
    description += " on '" + name_ + "' (rank " + std::to_string(rank_) + " of " +
                   std::to_string(size_) + ", world rank " + std::to_string(world_ranks_[rank_]) +
                   ")";
    return std::make_shared<MpiWork>(
        stats_, op, std::move(description),
        options.timeout.count() > 0 ? options.timeout : timeout_,
        options.timeout.count() > 0 ? "the op's timeout" : "comm.timeout_s", context_->board,
        std::move(diagnose));
  }

  // The state of a point-to-point op's peer: reachable or not, and its last collective here.
  static std::string describe_peer(const std::string& key, const GroupMember& member,
                                   const std::string& token, uint64_t own_sequence) {
    const PeerProgress progress = query_side_channel(member.address, token, kSideChannelTimeout);
    std::ostringstream text;
    text << "peer rank " << member.group_rank << " (world rank " << member.world_rank << ")";
    if (!progress.reachable) {
      text << ": side channel did not answer (dead or hung?): " << progress.error;
      return text.str();
    }
    text << " on host " << progress.host << ", pid " << progress.pid;
    const auto entry = progress.entries.find(key);
    if (entry == progress.entries.end()) {
      text << ", entered no collective on this group";
    } else {
      text << ", last entered collective #" << entry->second.sequence << " " << entry->second.op
           << " on this group (this rank: #" << own_sequence << ")";
    }
    return text.str();
  }

  void check_rc(int rc, const char* op) const {
    DST_CHECK(rc == MPI_SUCCESS, CommError,
              op << " on '" << name_ << "' failed: " << mpi_error_string(rc));
  }

  void check_tensor(const at::Tensor& t, const char* op) const {
    DST_CHECK(t.defined(), CommError, op << " on '" << name_ << "': undefined tensor");
    DST_CHECK(t.device().is_cpu(), CommError,
              op << " on '" << name_ << "': the MPI backend takes CPU tensors, got " << t.device());
    DST_CHECK(t.is_contiguous(), CommError,
              op << " on '" << name_ << "': tensor is not contiguous");
    mpi_type(t);
  }

  void check_same_dtype(const at::Tensor& a, const at::Tensor& b, const char* op) const {
    DST_CHECK(a.scalar_type() == b.scalar_type(), CommError,
              op << " on '" << name_ << "': output dtype " << a.scalar_type()
                 << " differs from input dtype " << b.scalar_type());
  }

  void check_peer(int peer, const char* op) const {
    DST_CHECK(peer >= 0 && peer < size_, CommError,
              op << " on '" << name_ << "': rank " << peer << " is not in [0, " << size_ << ")");
  }

  int to_count(int64_t n, const char* op) const {
    DST_CHECK(n <= INT_MAX, CommError,
              op << " on '" << name_ << "': " << n << " elements exceed MPI's int count");
    return static_cast<int>(n);
  }

  std::vector<int> to_counts(const std::vector<int64_t>& sizes, const char* op) const {
    std::vector<int> counts(sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) counts[i] = to_count(sizes[i], op);
    return counts;
  }

  MPI_Datatype mpi_type(const at::Tensor& t) const {
    switch (t.scalar_type()) {
      case at::kFloat:
        return MPI_FLOAT;
      case at::kDouble:
        return MPI_DOUBLE;
      case at::kInt:
        return MPI_INT32_T;
      case at::kLong:
        return MPI_INT64_T;
      case at::kByte:
        return MPI_UINT8_T;
      case at::kChar:
        return MPI_INT8_T;
      case at::kBFloat16:
      case at::kHalf:
        return context_->types.half_type;
      default:
        DST_THROW(CommError, "communicator '" << name_ << "': dtype " << t.scalar_type()
                                              << " is not supported by the MPI backend");
    }
  }

  // `t` as it travels (on_the_wire): 16-bit floats only ever reach here for a maximum.
  MPI_Op mpi_op(ReduceOp op, const at::Tensor& t) const {
    const bool max = op == ReduceOp::kMax;
    switch (t.scalar_type()) {
      case at::kBFloat16:
        DST_ASSERT(max, "16-bit sums travel as fp32");
        return context_->types.bf16_max;
      case at::kHalf:
        DST_ASSERT(max, "16-bit sums travel as fp32");
        return context_->types.f16_max;
      default:
        return max ? MPI_MAX : MPI_SUM;
    }
  }

  // What a reduction sends and accumulates: 16-bit float sums and averages travel as fp32, so
  // each element is summed in fp32 across every rank and rounded to 16 bits once at the end
  // (finish_reduction), whatever reduction tree MPI picks and however many ranks there are.
  // Everything else (maxima included, which are exact) is reduced as it is.
  static at::Tensor on_the_wire(const at::Tensor& tensor, ReduceOp op) {
    const bool sixteen_bit =
        tensor.scalar_type() == at::kBFloat16 || tensor.scalar_type() == at::kHalf;
    if (!sixteen_bit || op == ReduceOp::kMax) return tensor;
    return tensor.to(at::kFloat);
  }

  // Runs when the reduction into `wire` completes: averages, then rounds a widened result into
  // `result` (or nothing when there is nothing to do).
  std::function<void()> finish_reduction(at::Tensor result, at::Tensor wire, ReduceOp op) const {
    const int size = size_;
    const bool widened = !wire.is_same(result);
    if (op != ReduceOp::kAvg && !widened) return nullptr;
    return [result, wire, size, op, widened]() mutable {
      if (op == ReduceOp::kAvg) {
        if (at::isIntegralType(wire.scalar_type(), /*includeBool=*/false)) {
          wire.div_(size, "trunc");
        } else {
          wire.div_(size);
        }
      }
      if (widened) result.copy_(wire.view(result.sizes()));
    };
  }

  MPI_Comm comm_;
  std::string name_;
  std::shared_ptr<MpiJobContext> context_;
  std::vector<int> world_ranks_;  // by rank in this group
  std::string key_;               // the watchdog's name of this group
  std::shared_ptr<const std::vector<GroupMember>> members_;
  int rank_ = 0;
  int size_ = 1;
  uint64_t sequence_ = 0;  // collectives issued on this group
};

class MpiCollectiveWatch final : public CollectiveWatch {
 public:
  MpiCollectiveWatch(std::string key, std::shared_ptr<const std::vector<GroupMember>> members,
                     std::shared_ptr<MpiJobContext> context, std::string self)
      : key_(std::move(key)),
        members_(std::move(members)),
        context_(std::move(context)),
        self_(std::move(self)) {}
  uint64_t enter(const std::string& op) override {
    const uint64_t sequence = ++sequence_;
    context_->board->entered(key_, sequence, op);
    return sequence;
  }
  std::string missing_ranks(uint64_t sequence) const override {
    return name_missing_ranks(key_, sequence, *members_, context_->token, kSideChannelTimeout);
  }
  void mark_failed() override { context_->board->mark_failed(); }
  std::string describe_self() const override { return self_; }

 private:
  std::string key_;
  std::shared_ptr<const std::vector<GroupMember>> members_;
  std::shared_ptr<MpiJobContext> context_;
  std::string self_;
  std::atomic<uint64_t> sequence_{0};
};

std::shared_ptr<CollectiveWatch> MpiCommunicator::make_watch(const std::string& suffix) const {
  const std::string self = "rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
                           ", world rank " + std::to_string(world_ranks_[rank_]);
  return std::make_shared<MpiCollectiveWatch>(key_ + "/" + suffix, members_, context_, self);
}

}  // namespace

MpiRuntime::MpiRuntime() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    DST_CHECK(rc == MPI_SUCCESS, CommError, "MPI_Init_thread failed: " << mpi_error_string(rc));
    owns_init_ = true;
  }
}

MpiRuntime::~MpiRuntime() {
  if (owns_init_ && !mpi_finalized()) MPI_Finalize();
}

void MpiRuntime::abort(int exit_code) {
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

CommunicatorPtr MpiRuntime::world(const std::string& name) {
  MPI_Comm dup = MPI_COMM_NULL;
  const int rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  DST_CHECK(rc == MPI_SUCCESS, CommError, "MPI_Comm_dup failed: " << mpi_error_string(rc));
  if (!context_) context_ = std::make_shared<MpiJobContext>();
  return std::make_shared<MpiCommunicator>(dup, name, context_);
}

std::shared_ptr<CollectiveWatch> collective_watch(Communicator& mpi_group,
                                                  const std::string& backend_suffix) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&mpi_group);
  DST_CHECK(mpi, CommError,
            "the hang watchdog of '" << mpi_group.name() << "' needs an MPI group, got backend "
                                     << mpi_group.backend());
  return mpi->make_watch(backend_suffix);
}

}  // namespace dst::comm

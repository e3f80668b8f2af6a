// MPI backend for CPU tensors (float32/64, bfloat16, float16, int32, int64). Collectives are MPI
// non-blocking calls (MPI_Iallreduce, ...) behind Work handles. MPI has no 16-bit float reductions:
// bfloat16/float16 sums and averages travel and accumulate in fp32 and are rounded once at the end
// (the correctly rounded sum on any number of ranks, in any reduction order; byte accounting
// counts the fp32 bytes), maxima use user-defined MPI_Ops.
#pragma once

#include <memory>

#include "deepseek_train/comm/communicator.h"

namespace dst::comm {

struct MpiJobContext;

// Owns MPI initialisation: MPI_Init_thread on construction unless MPI is already initialised, and
// MPI_Finalize on destruction if it initialised it. Create one in main() before any communicator
// and destroy every communicator before it.
class MpiRuntime {
 public:
  MpiRuntime();
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // Communicator over MPI_COMM_WORLD (a duplicate, so library traffic never mixes with the user's).
  // Collective. The first call also starts this rank's watchdog side channel (watchdog.h), a TCP
  // listener that lets a rank whose collective timed out name the ranks that never arrived.
  CommunicatorPtr world(const std::string& name = "world");

  // Ends every rank of the job with `exit_code` (MPI_Abort), so a failure on one rank never leaves
  // the others waiting in a collective.
  [[noreturn]] void abort(int exit_code);

 private:
  bool owns_init_ = false;
  // Shared by every communicator of the job (types, reductions, the hang watchdog's side channel);
  // created by the first world() call, which is collective.
  std::shared_ptr<MpiJobContext> context_;
};

// The hang watchdog of an MPI group lent to another backend's operations over the same ranks
// (NCCL): enter() records an operation on this process's progress board under the group's key
// (suffixed, so the two backends' sequences never mix); missing_ranks() asks the members' side
// channels which of them never entered the operation numbered `sequence`.
class CollectiveWatch {
 public:
  virtual ~CollectiveWatch() = default;
  virtual uint64_t enter(const std::string& op) = 0;
  virtual std::string missing_ranks(uint64_t sequence) const = 0;
  // The job is failing: pending operations elsewhere stop waiting.
  virtual void mark_failed() = 0;
  // "rank r of n, world rank w" of this process in the group.
  virtual std::string describe_self() const = 0;
};

// The watch of `mpi_group` (an MPI communicator); CommError for another backend.
std::shared_ptr<CollectiveWatch> collective_watch(Communicator& mpi_group,
                                                  const std::string& backend_suffix);

}  // namespace dst::comm

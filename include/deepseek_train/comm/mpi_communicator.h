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

}  // namespace dst::comm

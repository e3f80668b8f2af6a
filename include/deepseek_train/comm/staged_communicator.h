// MPI (or any host-memory backend) for device tensors: a communicator that copies each operation's
// device tensors into pinned host buffers, runs the wrapped communicator's operation on them and,
// when the caller waits, copies the results back. Any layout then runs where NCCL cannot (ranks
// sharing one GPU, a cluster without NCCL), at the price of two copies per operation. Host tensors
// pass straight through (unless `stage_host_tensors`, which tests use to exercise the copies on a
// machine without a GPU). Byte accounting is the wrapped communicator's.
#pragma once

#include "deepseek_train/comm/communicator.h"

namespace dst::comm {

CommunicatorPtr make_staged_communicator(CommunicatorPtr host, bool stage_host_tensors = false);

}  // namespace dst::comm

// NCCL backend for CUDA tensors. Built on a bootstrap MPI communicator over the same ranks (the
// unique id travels over it; its hang watchdog names missing ranks); sub-groups by ncclCommSplit.
// Each communicator has its own CUDA stream: an operation first makes that stream wait for an
// event recorded on the caller's current stream, runs there, and records its end event;
// Work::synchronize() makes the caller's stream wait on that event (no host block), Work::wait()
// blocks the host (polling ncclCommGetAsyncError; on the deadline the communicator is aborted
// and a CommError names the op, group, sequence number and the ranks that never arrived). The
// tensors an operation uses are recorded on its stream for the caching allocator and held until
// it completes. bf16/fp16 reduce natively. Host tensors are copied to the device and back (small
// agreements: losses, norms, flags), so callers need not care which backend they have. Byte
// accounting follows communicator.h's formulas. Send/recv ignore tags: NCCL orders messages
// between a pair of ranks by issue order. Only in builds with DST_WITH_CUDA (build_info); elsewhere
// make_nccl_communicator throws ConfigError.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

#include "deepseek_train/comm/communicator.h"

namespace dst::comm {

// A CUDA-tensor communicator over the ranks of `bootstrap` (an MPI communicator), on `device`.
// Collective over `bootstrap`.
CommunicatorPtr make_nccl_communicator(const CommunicatorPtr& bootstrap, const c10::Device& device);

// Rank 0's `root_id` (its ncclUniqueId bytes) on every rank of `group`; every rank passes a buffer
// of the same size. Collective; the first step of creating an NCCL communicator.
std::vector<uint8_t> broadcast_bootstrap_id(Communicator& group, std::vector<uint8_t> root_id);

// Whether this build carries the NCCL backend.
bool nccl_available();

}  // namespace dst::comm

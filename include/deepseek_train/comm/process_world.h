// The processes of a run and the backend their tensors travel by, chosen here — from
// comm.backend, the launcher and the device the tensors live on (core/device.h) — and nowhere
// else:
//   auto:  CPU tensors: MPI under a launcher (mpirun, srun, PMIx/PMI), a single local process
//          otherwise; CUDA tensors: NCCL under a launcher when each local rank has its own GPU,
//          else MPI staged through host memory (comm/staged_communicator.h);
//   mpi:   MPI (started by a launcher or as a singleton), staged for CUDA tensors;
//   nccl:  NCCL over an MPI bootstrap (CUDA tensors, one GPU per rank);
//   local: one process (refused when a launcher started several).
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>

#include "deepseek_train/comm/comm_options.h"
#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/comm/mpi_communicator.h"
#include "deepseek_train/core/launch_env.h"

namespace dst::comm {

// "mpi", "nccl" or "local" for the options, the launch, the tensors' device and how many local
// ranks share each GPU; ConfigError naming comm.backend (and the launcher's process count) when
// they do not fit together.
std::string resolve_backend(const CommOptions& options, const LaunchEnv& env,
                            c10::DeviceType device = c10::DeviceType::CPU, int ranks_per_gpu = 1);

struct ProcessWorld {
  std::unique_ptr<MpiRuntime> mpi;  // keeps MPI initialised while the world is used (mpi, nccl)
  CommunicatorPtr communicator;     // every process, with comm.timeout_s as its deadline
};

// Collective over the launched processes; `device` is this rank's (resolve_device). With CUDA
// tensors under a launcher the ranks first compare host names and GPU bus ids (over MPI): NCCL
// when no two share a GPU, MPI staged otherwise, the same choice on every rank.
ProcessWorld open_process_world(const CommOptions& options, const LaunchEnv& env,
                                const c10::Device& device = c10::Device(c10::kCPU));

// The most ranks of `world` on one host and GPU (1: every rank has a GPU of its own).
// Collective.
int ranks_sharing_a_gpu(Communicator& world, const c10::Device& device);

}  // namespace dst::comm

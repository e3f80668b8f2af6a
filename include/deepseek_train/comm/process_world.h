// The processes of a run and the backend their tensors travel by, chosen here — from
// comm.backend, the launcher and the device the tensors live on — and nowhere else:
//   auto:  MPI under a launcher (mpirun, srun, PMIx/PMI), a single local process otherwise;
//   mpi:   MPI (started by a launcher or as a singleton);
//   local: one process (refused when a launcher started several).
// CPU tensors travel by MPI; CUDA tensors will take NCCL (the GPU path), which a run asks for
// with device cuda — refused with a one-line error until that backend exists.
#pragma once

#include <c10/core/DeviceType.h>

#include <memory>
#include <string>

#include "deepseek_train/comm/comm_options.h"
#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/comm/mpi_communicator.h"
#include "deepseek_train/core/launch_env.h"

namespace dst::comm {

// "mpi" or "local" for the options, the launch and the tensors' device; ConfigError naming
// comm.backend (and the launcher's process count) when they do not fit together.
std::string resolve_backend(const CommOptions& options, const LaunchEnv& env,
                            c10::DeviceType device = c10::DeviceType::CPU);

struct ProcessWorld {
  std::unique_ptr<MpiRuntime> mpi;  // keeps MPI initialised while the world is used (mpi only)
  CommunicatorPtr communicator;     // every process, with comm.timeout_s as its deadline
};

// Collective over the launched processes.
ProcessWorld open_process_world(const CommOptions& options, const LaunchEnv& env,
                                c10::DeviceType device = c10::DeviceType::CPU);

}  // namespace dst::comm

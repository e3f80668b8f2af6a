#include "deepseek_train/comm/process_world.h"

#include <chrono>

#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/core/error.h"

namespace dst::comm {

std::string resolve_backend(const CommOptions& options, const LaunchEnv& env,
                            c10::DeviceType device) {
  DST_CHECK(device == c10::DeviceType::CPU, ConfigError,
            "comm.backend '" << options.backend << "': tensors on " << c10::DeviceTypeName(device)
                             << " need the NCCL backend, which is not implemented yet (this "
                                "build moves CPU tensors only)");
  const std::string& backend = options.backend;
  DST_CHECK(backend == "auto" || backend == "mpi" || backend == "local", ConfigError,
            "comm.backend '" << backend << "' is not one of auto, mpi, local");
  if (backend == "auto") return env.launcher != "none" ? "mpi" : "local";
  DST_CHECK(backend != "local" || env.world_size == 1, ConfigError,
            "comm.backend 'local' runs a single process, but "
                << env.launcher << " started " << env.world_size << " (use auto or mpi)");
  return backend;
}

ProcessWorld open_process_world(const CommOptions& options, const LaunchEnv& env,
                                c10::DeviceType device) {
  ProcessWorld world;
  if (resolve_backend(options, env, device) == "mpi") {
    world.mpi = std::make_unique<MpiRuntime>();
    world.communicator = world.mpi->world();
  } else {
    world.communicator = make_local_communicator();
  }
  world.communicator->set_timeout(
      std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000)));
  return world;
}

}  // namespace dst::comm

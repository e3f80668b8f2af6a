#include "deepseek_train/comm/process_world.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/comm/nccl_communicator.h"
#include "deepseek_train/comm/staged_communicator.h"
#include "deepseek_train/comm/watchdog.h"
#include "deepseek_train/core/device.h"
#include "deepseek_train/core/error.h"

namespace dst::comm {

namespace {

std::string resolve_for_cuda(const std::string& backend, const LaunchEnv& env, int ranks_per_gpu) {
  if (backend == "auto") {
    if (env.launcher == "none") return "local";
    return nccl_available() && ranks_per_gpu == 1 ? "nccl" : "mpi";
  }
  if (backend != "nccl") return backend;
  DST_CHECK(nccl_available(), ConfigError,
            "comm.backend 'nccl': this build has no CUDA/NCCL (configure with DST_WITH_CUDA=ON)");
  DST_CHECK(ranks_per_gpu == 1, ConfigError,
            "comm.backend 'nccl': " << ranks_per_gpu
                                    << " ranks share one GPU (same host and PCI bus id); NCCL "
                                       "needs one GPU per rank (use comm.backend mpi, which "
                                       "stages through host memory)");
  return backend;
}

}  // namespace

std::string resolve_backend(const CommOptions& options, const LaunchEnv& env,
                            c10::DeviceType device, int ranks_per_gpu) {
  const std::string& backend = options.backend;
  DST_CHECK(backend == "auto" || backend == "mpi" || backend == "nccl" || backend == "local",
            ConfigError, "comm.backend '" << backend << "' is not one of auto, mpi, nccl, local");
  DST_CHECK(backend != "local" || env.world_size == 1, ConfigError,
            "comm.backend 'local' runs a single process, but "
                << env.launcher << " started " << env.world_size << " (use auto or mpi)");
  if (device == c10::DeviceType::CUDA) return resolve_for_cuda(backend, env, ranks_per_gpu);
  DST_CHECK(backend != "nccl", ConfigError,
            "comm.backend 'nccl' moves CUDA tensors, but this run's tensors are on "
                << c10::DeviceTypeName(device) << " (train.device)");
  if (backend == "auto") return env.launcher != "none" ? "mpi" : "local";
  return backend;
}

int ranks_sharing_a_gpu(Communicator& world, const c10::Device& device) {
  constexpr int64_t kBytes = 128;
  const std::string id = local_host_name() + " " + device_bus_id(device) + " " +
                         (device.has_index() ? std::to_string(device.index()) : "");
  at::Tensor mine = at::zeros({kBytes}, at::kByte);
  std::memcpy(mine.data_ptr(), id.data(), std::min<size_t>(id.size(), kBytes - 1));
  at::Tensor all = at::zeros({kBytes * world.size()}, at::kByte);
  world.all_gather(all, mine)->wait();
  int64_t same = 0;
  for (int r = 0; r < world.size(); ++r)
    same += at::equal(all.narrow(0, r * kBytes, kBytes), mine) ? 1 : 0;
  at::Tensor most = at::full({1}, same, at::kLong);  // every rank decides alike
  world.all_reduce(most, ReduceOp::kMax)->wait();
  return static_cast<int>(most.item<int64_t>());
}

ProcessWorld open_process_world(const CommOptions& options, const LaunchEnv& env,
                                const c10::Device& device) {
  std::string backend = resolve_backend(options, env, device.type());
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000));
  ProcessWorld world;
  if (backend == "local") {
    world.communicator = make_local_communicator();
    world.communicator->set_timeout(timeout);
    return world;
  }
  world.mpi = std::make_unique<MpiRuntime>();
  CommunicatorPtr mpi_world = world.mpi->world();
  mpi_world->set_timeout(timeout);
  if (device.is_cuda())
    backend = resolve_backend(options, env, device.type(), ranks_sharing_a_gpu(*mpi_world, device));
  if (backend == "nccl") {
    world.communicator = make_nccl_communicator(mpi_world, device);
  } else {
    world.communicator = device.is_cuda() ? make_staged_communicator(mpi_world) : mpi_world;
  }
  world.communicator->set_timeout(timeout);
  return world;
}

}  // namespace dst::comm

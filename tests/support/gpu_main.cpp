// Catch2 entry point of the GPU tests (CTest label gpu): without a visible CUDA device (or in a
// build without CUDA) the binary exits 77, which CTest reports as skipped (SKIP_RETURN_CODE).
// With one it initialises MPI (a singleton, or the ranks mpirun started) for the NCCL bootstrap.
#define CATCH_CONFIG_RUNNER
#include <torch/cuda.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <iostream>

#include "deepseek_train/comm/mpi_communicator.h"
#include "deepseek_train/comm/nccl_communicator.h"
#include "support/mpi_world.h"

namespace {
dst::comm::CommunicatorPtr* world_slot = nullptr;
constexpr int kSkipped = 77;
}  // namespace

dst::comm::CommunicatorPtr dst::testing::world() { return *world_slot; }

int main(int argc, char** argv) {
  if (!dst::comm::nccl_available() || torch::cuda::device_count() == 0) {
    std::cout << "skipped: no CUDA device visible (or a build without CUDA/NCCL)\n";
    return kSkipped;
  }
  dst::comm::MpiRuntime runtime;
  dst::comm::CommunicatorPtr world = runtime.world();
  world->set_timeout(std::chrono::seconds(120));
  world_slot = &world;
  Catch::Session session;
  const int failures = session.run(argc, argv);
  world_slot = nullptr;
  return failures > 0 ? 1 : 0;
}

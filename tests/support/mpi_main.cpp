// Catch2 entry point of the multi-process tests: initialises MPI, runs the tests on every rank,
// and makes the exit code non-zero on every rank when any rank failed.
#define CATCH_CONFIG_RUNNER
#include <mpi.h>

#include <catch2/catch.hpp>
#include <chrono>

#include "deepseek_train/comm/mpi_communicator.h"
#include "support/mpi_world.h"

namespace {
dst::comm::CommunicatorPtr* world_slot = nullptr;
}

dst::comm::CommunicatorPtr dst::testing::world() { return *world_slot; }

int main(int argc, char** argv) {
  dst::comm::MpiRuntime runtime;
  int failures = 0;
  {
    dst::comm::CommunicatorPtr world = runtime.world();
    // A failed assertion on one rank must not leave the others waiting forever.
    world->set_timeout(std::chrono::seconds(60));
    world_slot = &world;
    Catch::Session session;
    failures = session.run(argc, argv);
    int any = 0;
    MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    failures = any;
    world_slot = nullptr;
  }
  return failures > 0 ? 1 : 0;
}

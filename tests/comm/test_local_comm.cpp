#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/comm/nccl_communicator.h"
#include "deepseek_train/comm/process_world.h"
#include "deepseek_train/core/error.h"

using namespace dst;

TEST_CASE("split_sizes gives balanced parts that sum to n", "[comm]") {
  CHECK(comm::split_sizes(10, 4) == std::vector<int64_t>{3, 3, 2, 2});
  CHECK(comm::split_sizes(3, 4) == std::vector<int64_t>{1, 1, 1, 0});
  CHECK(comm::split_sizes(0, 2) == std::vector<int64_t>{0, 0});
  CHECK(comm::split_offset(10, 4, 0) == 0);
  CHECK(comm::split_offset(10, 4, 2) == 6);
  CHECK(comm::split_offset(10, 4, 3) == 8);
}

TEST_CASE("local communicator: collectives are identities on one rank", "[comm]") {
  auto world = comm::make_local_communicator();
  CHECK(world->size() == 1);
  CHECK(world->rank() == 0);
  at::Tensor t = at::arange(5, at::kFloat);
  world->all_reduce(t, comm::ReduceOp::kAvg)->wait();
  CHECK(at::equal(t, at::arange(5, at::kFloat)));
  at::Tensor out = at::zeros({5});
  world->all_gather(out, t)->wait();
  CHECK(at::equal(out, t));
  out.zero_();
  world->reduce_scatter(out, t, comm::ReduceOp::kSum)->wait();
  CHECK(at::equal(out, t));
  CHECK(world->barrier()->is_completed());
  at::Tensor bad = at::zeros({3});
  CHECK_THROWS_AS(world->all_gather(bad, t), CommError);
  CHECK_THROWS_AS(world->send(t, 1, 0), CommError);
  CHECK(world->split(0, 0, "sub")->size() == 1);
  CHECK(world->split(-1, 0, "none") == nullptr);
  CHECK(world->stats().at(comm::OpType::kAllReduce).calls == 1);
  CHECK(world->stats().total_bytes() == 0);
}

TEST_CASE("local communicator: all_to_all copies its one block and checks the splits", "[comm]") {
  auto world = comm::make_local_communicator();
  at::Tensor input = at::arange(6, at::kFloat).view({3, 2});
  at::Tensor output = at::zeros({3, 2});
  world->all_to_all(output, input, {3}, {3})->wait();
  CHECK(at::equal(output, input));
  CHECK(world->stats().at(comm::OpType::kAllToAll).calls == 1);
  CHECK(world->stats().at(comm::OpType::kAllToAll).bytes == 0);
  CHECK_THROWS_WITH(world->all_to_all(output, input, {2}, {3}),
                    Catch::Contains("output split sizes add up to 2 rows, the output has 3"));
  CHECK(std::string(comm::op_name(comm::OpType::kAllToAll)) == "all_to_all");
}

TEST_CASE("the backend is chosen inside comm from comm.backend, the launcher and the device",
          "[comm]") {
  using dst::comm::resolve_backend;
  dst::CommOptions options;
  dst::LaunchEnv alone;
  dst::LaunchEnv launched;
  launched.launcher = "openmpi";
  launched.world_size = 4;
  CHECK(resolve_backend(options, alone) == "local");
  CHECK(resolve_backend(options, launched) == "mpi");
  options.backend = "mpi";
  CHECK(resolve_backend(options, alone) == "mpi");  // an MPI singleton
  options.backend = "local";
  CHECK(resolve_backend(options, alone) == "local");
  CHECK_THROWS_WITH(resolve_backend(options, launched),
                    Catch::Contains("comm.backend 'local' runs a single process, but openmpi "
                                    "started 4"));
  options.backend = "gloo";
  CHECK_THROWS_WITH(resolve_backend(options, alone),
                    Catch::Contains("comm.backend 'gloo' is not one of auto, mpi, nccl, local"));
  // CUDA tensors: NCCL when each local rank has its own GPU (and the build has it), MPI staged
  // through host memory when ranks share one; a single process needs no backend.
  using dst::comm::nccl_available;
  const auto cuda = c10::DeviceType::CUDA;
  options.backend = "auto";
  CHECK(resolve_backend(options, launched, cuda) == (nccl_available() ? "nccl" : "mpi"));
  CHECK(resolve_backend(options, launched, cuda, /*ranks_per_gpu=*/2) == "mpi");
  CHECK(resolve_backend(options, alone, cuda) == "local");
  options.backend = "mpi";
  CHECK(resolve_backend(options, launched, cuda) == "mpi");
  options.backend = "nccl";
  CHECK_THROWS_WITH(resolve_backend(options, launched),
                    Catch::Contains("comm.backend 'nccl' moves CUDA tensors, but this run's "
                                    "tensors are on CPU"));
  if (nccl_available()) {
    CHECK(resolve_backend(options, launched, cuda) == "nccl");
    CHECK_THROWS_WITH(resolve_backend(options, launched, cuda, 2),
                      Catch::Contains("2 ranks share one GPU"));
  } else {
    CHECK_THROWS_WITH(resolve_backend(options, launched, cuda),
                      Catch::Contains("this build has no CUDA/NCCL"));
  }
  options.backend = "auto";
  // The single-process world carries comm.timeout_s.
  options.timeout_s = 12.5;
  const dst::comm::ProcessWorld world = dst::comm::open_process_world(options, alone);
  CHECK(world.mpi == nullptr);
  CHECK(world.communicator->size() == 1);
  CHECK(world.communicator->timeout() == std::chrono::milliseconds(12500));
}

// GPU tests (tag [gpu], CTest label gpu; support/gpu_main.cpp skips them without a GPU):
// the NCCL backend's collectives on one rank, MPI staged through host memory for CUDA tensors,
// and a trainer on CUDA against the same trainer on the CPU. scripts/device_check.sh runs them.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/comm/nccl_communicator.h"
#include "deepseek_train/comm/staged_communicator.h"
#include "deepseek_train/core/device.h"
#include "support/mpi_world.h"
#include "support/train_fixtures.h"

using namespace dst;
using comm::ReduceOp;

namespace {

const c10::Device kGpu(c10::kCUDA, 0);

// Every op of `group` (one rank) on CUDA tensors and on a host tensor.
void check_single_rank_collectives(comm::Communicator& group) {
  const auto cuda_float = at::TensorOptions().dtype(at::kFloat).device(kGpu);
  at::Tensor t = at::arange(10, cuda_float);
  group.all_reduce(t, ReduceOp::kSum)->wait();
  CHECK(at::equal(t.cpu(), at::arange(10, at::kFloat)));
  at::Tensor bf16 = at::ones({7}, cuda_float.dtype(at::kBFloat16));
  group.all_reduce(bf16, ReduceOp::kAvg)->synchronize();  // stream-ordered, then read
  CHECK(at::equal(bf16.cpu(), at::ones({7}, at::kBFloat16)));
  at::Tensor out = at::zeros({10}, cuda_float);
  group.reduce_scatter(out, t, ReduceOp::kSum)->wait();
  CHECK(at::equal(out.cpu(), t.cpu()));
  at::Tensor gathered = at::zeros({10}, cuda_float);
  group.all_gather(gathered, t)->wait();
  CHECK(at::equal(gathered.cpu(), t.cpu()));
  group.broadcast(t, 0)->wait();
  at::Tensor rows = at::arange(6, cuda_float).view({3, 2});
  at::Tensor exchanged = at::zeros({3, 2}, cuda_float);
  group.all_to_all(exchanged, rows, {}, {})->wait();
  CHECK(at::equal(exchanged.cpu(), rows.cpu()));
  at::Tensor host = at::full({3}, 2.0, at::kDouble);  // a host tensor: copied there and back
  group.all_reduce(host, ReduceOp::kMax)->wait();
  CHECK(at::equal(host, at::full({3}, 2.0, at::kDouble)));
  group.barrier()->wait();
}

}  // namespace

TEST_CASE("NCCL on one rank: every collective, bf16 natively, host tensors staged", "[gpu]") {
  auto nccl = comm::make_nccl_communicator(testing::world(), kGpu);
  CHECK(nccl->backend() == "nccl");
  check_single_rank_collectives(*nccl);
  auto child = nccl->split(0, 0, "child");
  REQUIRE(child);
  check_single_rank_collectives(*child);
  CHECK(nccl->stats().at(comm::OpType::kAllReduce).calls >= 3);
}

TEST_CASE("MPI staged through pinned host buffers moves CUDA tensors", "[gpu]") {
  auto staged = comm::make_staged_communicator(testing::world());
  check_single_rank_collectives(*staged);
}

TEST_CASE("a trainer on CUDA equals the same trainer on the CPU (fp32, 5 steps)", "[gpu]") {
  TrainConfig config = testing::equivalence_config(1, 2);
  Logger quiet(0, 1, LogLevel::kWarn);
  config.train.device = "cpu";
  Trainer cpu(config, ProcessGroups::create(comm::make_local_communicator(), {1, 1, 1}), quiet);
  config.train.device = "cuda";
  Trainer gpu(config, ProcessGroups::create(comm::make_local_communicator(), {1, 1, 1}), quiet);
  REQUIRE(gpu.device().is_cuda());
  for (int64_t step = 1; step <= config.train.steps; ++step) {
    const MicroBatch batch = testing::global_batch(step, 4, config.data.seq_len);
    const std::vector<MicroBatch> micro{testing::rows_of(batch, 0, 2),
                                        testing::rows_of(batch, 2, 2)};
    const double cpu_loss = cpu.train_step(micro).loss;
    const double gpu_loss = gpu.train_step(micro).loss;
    INFO("step " << step << " cpu " << cpu_loss << " gpu " << gpu_loss);
    CHECK(std::abs(gpu_loss - cpu_loss) <= 1e-5 * std::abs(cpu_loss));
  }
  const auto expected = cpu.full_parameters();
  const auto actual = gpu.full_parameters();
  REQUIRE(expected.size() == actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO(expected[i].first);
    CHECK(testing::relative_difference(actual[i].second.cpu(), expected[i].second) <= 1e-5);
  }
  CHECK(device_memory(gpu.device()).peak_allocated_bytes > 0);
}

// Collectives of the MPI backend on every supported dtype, checked against values computed from
// rank arithmetic. Runs under mpirun with 2 and 4 ranks.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "deepseek_train/core/error.h"
#include "support/mpi_world.h"

using namespace dst;
using comm::ReduceOp;

namespace {
const std::vector<at::ScalarType> kAllTypes = {at::kFloat, at::kDouble, at::kBFloat16,
                                               at::kHalf,  at::kInt,    at::kLong};

// Element i of rank r's input: small integers, exact in every dtype (sums stay below 256).
at::Tensor rank_values(int64_t n, int rank, at::ScalarType type) {
  return (at::arange(n, at::kLong) % 7 + rank * 3 + 1).to(type);
}
at::Tensor expected_sum(int64_t n, int world, at::ScalarType type) {
  at::Tensor sum = at::zeros({n}, at::kLong);
  for (int r = 0; r < world; ++r) sum += rank_values(n, r, at::kLong);
  return sum.to(type);
}
}  // namespace

TEST_CASE("all_reduce sum/avg/max for every dtype, including sizes not divisible by the world",
          "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  for (at::ScalarType type : kAllTypes) {
    for (int64_t n : {int64_t{1}, int64_t{5}, int64_t{13}, int64_t{1000}}) {
      INFO("dtype " << type << " n " << n);
      at::Tensor t = rank_values(n, r, type);
      world->all_reduce(t, ReduceOp::kSum)->wait();
      CHECK(at::equal(t, expected_sum(n, p, type)));

      t = rank_values(n, r, type);
      world->all_reduce(t, ReduceOp::kMax)->wait();
      CHECK(at::equal(t, rank_values(n, p - 1, type)));

      t = (rank_values(n, r, at::kLong) * p).to(type);  // sum divisible by p for exact averages
      world->all_reduce(t, ReduceOp::kAvg)->wait();
      CHECK(at::equal(t, expected_sum(n, p, type)));
    }
  }
}

TEST_CASE("16-bit float sums accumulate each pair in fp32 and round once", "[comm]") {
  auto world = testing::world();
  // 1 + 2^-7 is exact in bf16 (7 explicit mantissa bits) and fp16; for 2 and 4 ranks the sum
  // p * (1 + 2^-7) keeps the same mantissa, so a correct reduction is exact.
  for (at::ScalarType type : {at::kBFloat16, at::kHalf}) {
    at::Tensor t = at::full({17}, 1.0 + 1.0 / 128, at::TensorOptions().dtype(type));
    world->all_reduce(t, ReduceOp::kSum)->wait();
    const double expected = world->size() * (1.0 + 1.0 / 128);
    CHECK(t.to(at::kDouble).eq(expected).all().item<bool>());
    // Negative values and max.
    at::Tensor m = at::full({3}, -1.5 - world->rank(), at::TensorOptions().dtype(type));
    world->all_reduce(m, ReduceOp::kMax)->wait();
    CHECK(m.to(at::kFloat).eq(-1.5f).all().item<bool>());
  }
}

TEST_CASE("reduce_scatter and all_gather on flat buffers of any size", "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  for (at::ScalarType type : kAllTypes) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{10}, int64_t{257}}) {
      INFO("dtype " << type << " n " << n);
      const auto sizes = comm::split_sizes(n, p);
      const int64_t offset = comm::split_offset(n, p, r);
      at::Tensor input = rank_values(n, r, type);
      at::Tensor shard = at::zeros({sizes[r]}, at::TensorOptions().dtype(type));
      world->reduce_scatter(shard, input, ReduceOp::kSum)->wait();
      CHECK(at::equal(shard, expected_sum(n, p, type).narrow(0, offset, sizes[r])));

      at::Tensor full = at::zeros({n}, at::TensorOptions().dtype(type));
      at::Tensor mine = (at::arange(sizes[r], at::kLong) + offset).to(type);
      world->all_gather(full, mine)->wait();
      CHECK(at::equal(full, at::arange(n, at::kLong).to(type)));

      // In place: the input is this rank's slot of the output buffer.
      at::Tensor inplace = at::zeros({n}, at::TensorOptions().dtype(type));
      inplace.narrow(0, offset, sizes[r]).copy_(mine);
      at::Tensor slot = inplace.narrow(0, offset, sizes[r]);
      world->all_gather(inplace, slot)->wait();
      CHECK(at::equal(inplace, at::arange(n, at::kLong).to(type)));
    }
  }
  at::Tensor wrong = at::zeros({99});
  at::Tensor input = at::zeros({10});
  CHECK_THROWS_AS(world->reduce_scatter(wrong, input, ReduceOp::kSum), CommError);
}

TEST_CASE("broadcast, send/recv, barrier, empty tensors", "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  for (at::ScalarType type : kAllTypes) {
    at::Tensor t = r == p - 1 ? at::arange(6, at::kLong).to(type)
                              : at::zeros({6}, at::TensorOptions().dtype(type));
    world->broadcast(t, p - 1)->wait();
    CHECK(at::equal(t, at::arange(6, at::kLong).to(type)));
  }
  // Ring exchange: send to the right, receive from the left.
  at::Tensor out = at::full({4}, static_cast<double>(r), at::kDouble);
  at::Tensor in = at::zeros({4}, at::kDouble);
  auto recv = world->recv(in, (r + p - 1) % p, 7);
  auto send = world->send(out, (r + 1) % p, 7);
  send->wait();
  recv->wait();
  CHECK(in.eq((r + p - 1) % p).all().item<bool>());
  world->barrier()->wait();

  at::Tensor empty = at::zeros({0});
  CHECK(world->all_reduce(empty, ReduceOp::kSum)->is_completed());
  at::Tensor empty_out = at::zeros({0});
  world->all_gather(empty_out, empty)->wait();
  at::Tensor flags = at::zeros({2}, at::kBool);
  CHECK_THROWS_AS(world->all_reduce(flags, ReduceOp::kSum), CommError);
}

TEST_CASE("Work: is_completed, and wait() times out with the op named", "[comm]") {
  auto world = testing::world();
  const int r = world->rank();
  if (r == 0) {
    at::Tensor in = at::zeros({1});
    auto recv = world->recv(in, 1, 42);
    CHECK_FALSE(recv->is_completed());
    CHECK_THROWS_WITH(recv->wait(std::chrono::milliseconds(20)),
                      Catch::Contains("recv from rank 1 (world rank 1) on 'world'"));
    at::Tensor go = at::ones({1});
    world->send(go, 1, 43)->wait();
    recv->wait();
    CHECK(in.item<float>() == 5.0f);
  } else if (r == 1) {
    at::Tensor go = at::zeros({1});
    world->recv(go, 0, 43)->wait();
    at::Tensor five = at::full({1}, 5.0f);
    world->send(five, 0, 42)->wait();
  }
  world->barrier()->wait();
}

TEST_CASE("split into sub-communicators; byte counters follow the ring formulas", "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  auto halves = world->split(r % 2, r, "parity");
  REQUIRE(halves);
  CHECK(halves->size() == (p + 1 - r % 2) / 2);
  CHECK(halves->rank() == r / 2);
  at::Tensor t = at::full({3}, static_cast<int64_t>(r), at::kLong);
  halves->all_reduce(t, ReduceOp::kSum)->wait();
  int64_t expected = 0;
  for (int q = r % 2; q < p; q += 2) expected += q;
  CHECK(t.eq(expected).all().item<bool>());
  auto without_rank0 = world->split(r == 0 ? -1 : 0, r, "without-rank0");
  CHECK((without_rank0 == nullptr) == (r == 0));
  if (without_rank0) CHECK(without_rank0->size() == p - 1);

  auto counted = world->split(0, r, "counted");
  at::Tensor buffer = at::zeros({100}, at::kFloat);
  counted->all_reduce(buffer, ReduceOp::kSum)->wait();
  const int64_t own = comm::split_sizes(100, p)[r];
  CHECK(counted->stats().at(comm::OpType::kAllReduce).bytes ==
        static_cast<uint64_t>(2 * (100 - own) * 4));
  at::Tensor shard = at::zeros({own}, at::kFloat);
  counted->reduce_scatter(shard, buffer, ReduceOp::kSum)->wait();
  counted->all_gather(buffer, shard)->wait();
  CHECK(counted->stats().at(comm::OpType::kReduceScatter).bytes ==
        static_cast<uint64_t>((100 - own) * 4));
  CHECK(counted->stats().at(comm::OpType::kAllGather).bytes ==
        static_cast<uint64_t>((100 - own) * 4));
  CHECK(counted->stats().total_bytes() == static_cast<uint64_t>(4 * (100 - own) * 4));
  CHECK(counted->stats().at(comm::OpType::kAllReduce).calls == 1);
}

// Collectives of the MPI backend on every supported dtype, checked against values computed from
// rank arithmetic. Runs under mpirun with 2 and 4 ranks.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "deepseek_train/comm/nccl_communicator.h"
#include "deepseek_train/comm/staged_communicator.h"
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

namespace {
// Every rank's values (the same on every rank: a seeded generator): [world, n], each exactly
// representable in `type` (8 significant bits for bf16, 11 for fp16), magnitudes 2^-8 .. 2, both
// signs, so any sum of 4 of them is exact in fp32.
at::Tensor all_ranks_16bit_values(int world, int64_t n, at::ScalarType type) {
  auto generator = at::detail::createCPUGenerator(4242);
  const int bits = type == at::kBFloat16 ? 8 : 11;
  const at::Tensor mantissa = at::randint(1 << (bits - 1), 1 << bits, {world, n}, generator,
                                          at::TensorOptions().dtype(at::kDouble));
  const at::Tensor exponent =
      at::randint(-8, 1, {world, n}, generator, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor sign =
      at::randint(0, 2, {world, n}, generator, at::TensorOptions().dtype(at::kDouble)) * 2 - 1;
  at::Tensor values = sign * mantissa * at::pow(2.0, exponent - (bits - 1));
  // Element 0: rank 0 holds 1, every other rank 2^-bits (half a unit in the last place of 1).
  values.select(1, 0).fill_(std::ldexp(1.0, -bits));
  values[0][0] = 1.0;
  REQUIRE(at::equal(values.to(type).to(at::kDouble), values));
  return values.to(type);
}

// Adding the ranks' values one at a time in 16 bits, rounding after every add (what a reduction
// of 16-bit buffers does).
at::Tensor naive_16bit_sum(const at::Tensor& values) {
  at::Tensor sum = values[0].clone();
  for (int64_t r = 1; r < values.size(0); ++r)
    sum = (sum.to(at::kFloat) + values[r].to(at::kFloat)).to(values.scalar_type());
  return sum;
}
}  // namespace

// 16-bit sums accumulate in fp32 across every rank and are rounded once, to the nearest (ties to
// even). Element 0 shows the difference: in bf16, 1 + 2^-8 is a tie that rounds back to 1, so
// adding the other ranks' 2^-8 one at a time never moves it, while the exact sum 1 + 3 * 2^-8 on 4
// ranks rounds to 1 + 2^-6 (fp16 likewise with 2^-11). With 3 or more ranks the test checks that
// its values do tell the two apart; with 2 ranks both are one rounding of the same exact sum, and
// the check is that the rounding is to nearest even (element 0 stays 1; rounding half up would
// give 1 + 2^-7).
TEST_CASE("16-bit float sums accumulate in fp32 and round once, on any number of ranks", "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  const int64_t n = 1001;
  for (at::ScalarType type : {at::kBFloat16, at::kHalf}) {
    INFO("dtype " << type);
    const at::Tensor values = all_ranks_16bit_values(p, n, type);
    const at::Tensor exact = values.to(at::kDouble).sum(0);
    const at::Tensor expected = exact.to(at::kFloat).to(type);  // rounded once
    if (p >= 3) CHECK_FALSE(at::equal(naive_16bit_sum(values), expected));
    if (p == 2) CHECK(expected[0].item<double>() == 1.0);

    at::Tensor t = values[r].clone();
    world->all_reduce(t, ReduceOp::kSum)->wait();
    CHECK(at::equal(t, expected));

    t = values[r].clone();
    world->all_reduce(t, ReduceOp::kAvg)->wait();
    CHECK(at::equal(t, (exact / p).to(at::kFloat).to(type)));

    const auto sizes = comm::split_sizes(n, p);
    at::Tensor shard = at::zeros({sizes[r]}, at::TensorOptions().dtype(type));
    world->reduce_scatter(shard, values[r].clone(), ReduceOp::kSum)->wait();
    CHECK(at::equal(shard, expected.narrow(0, comm::split_offset(n, p, r), sizes[r])));

    // Maxima are exact; negative values.
    at::Tensor m = at::full({3}, -1.5 - r, at::TensorOptions().dtype(type));
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

namespace {
// The value rank `from` sends to rank `to` in row `i` of that block, column `c`: unique per
// (from, to, row, column), exact in every dtype used.
double all_to_all_value(int from, int to, int64_t i, int64_t c) {
  return from * 64 + to * 16 + i * 2 + c;
}
}  // namespace

// all_to_all with equal splits and with uneven per-rank splits (some empty, the rank's own block
// included), rows of 2 columns, in several dtypes: every row arrives at its rank in rank order,
// the byte counter counts the rows sent to the other ranks, bad splits are one-line errors.
TEST_CASE("all_to_all: equal, uneven and empty splits, rows in rank order, bytes counted",
          "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  // Rows rank `from` sends to rank `to`: 0 for some pairs (an empty split), up to 3.
  auto rows = [](int from, int to) -> int64_t { return (from * 3 + to * 2) % 4; };
  for (at::ScalarType type : {at::kFloat, at::kBFloat16, at::kLong}) {
    for (bool equal : {true, false}) {
      INFO("dtype " << type << (equal ? " equal splits" : " uneven splits"));
      std::vector<int64_t> in_splits, out_splits;
      for (int q = 0; q < p; ++q) {
        in_splits.push_back(equal ? 2 : rows(r, q));
        out_splits.push_back(equal ? 2 : rows(q, r));
      }
      auto block = [&](int from, int to, int64_t n) {
        at::Tensor t = at::empty({n, 2}, at::kDouble);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t c = 0; c < 2; ++c) t[i][c] = all_to_all_value(from, to, i, c);
        return t.to(type);
      };
      std::vector<at::Tensor> sent, expected;
      for (int q = 0; q < p; ++q) {
        sent.push_back(block(r, q, in_splits[q]));
        expected.push_back(block(q, r, out_splits[q]));
      }
      at::Tensor input = at::cat(sent);
      at::Tensor output =
          at::full({at::cat(expected).size(0), 2}, -1, at::TensorOptions().dtype(type));
      const uint64_t before = world->stats().at(comm::OpType::kAllToAll).bytes;
      world
          ->all_to_all(output, input, equal ? std::vector<int64_t>{} : out_splits,
                       equal ? std::vector<int64_t>{} : in_splits)
          ->wait();
      CHECK(at::equal(output, at::cat(expected)));
      int64_t rows_to_others = 0;
      for (int q = 0; q < p; ++q)
        if (q != r) rows_to_others += in_splits[q];
      CHECK(world->stats().at(comm::OpType::kAllToAll).bytes - before ==
            static_cast<uint64_t>(rows_to_others * 2 * input.element_size()));
    }
  }
  // A rank that sends and receives nothing at all still takes part.
  at::Tensor none = at::zeros({0, 3});
  world->all_to_all(none, none, std::vector<int64_t>(p, 0), std::vector<int64_t>(p, 0))->wait();

  at::Tensor four = at::zeros({4 * p + 1});
  CHECK_THROWS_WITH(world->all_to_all(four, four, {}, {}),
                    Catch::Contains("all_to_all on 'world': input has " +
                                    std::to_string(4 * p + 1) + " rows, not divisible by"));
  at::Tensor rows_of_two = at::zeros({p, 2}), rows_of_three = at::zeros({p, 3});
  CHECK_THROWS_WITH(world->all_to_all(rows_of_three, rows_of_two, {}, {}),
                    Catch::Contains("dims after the first differ"));
  std::vector<int64_t> short_splits(static_cast<size_t>(p - 1), 1);
  CHECK_THROWS_WITH(world->all_to_all(rows_of_two, rows_of_two, {}, short_splits),
                    Catch::Contains(std::to_string(p - 1) + " input split sizes for " +
                                    std::to_string(p) + " ranks"));
  std::vector<int64_t> too_many(static_cast<size_t>(p), 2);
  CHECK_THROWS_WITH(world->all_to_all(rows_of_two, rows_of_two, {}, too_many),
                    Catch::Contains("input split sizes add up to " + std::to_string(2 * p) +
                                    " rows, the input has " + std::to_string(p)));
  world->barrier()->wait();
}

// The hang watchdog covers all_to_all: while the last rank has not entered it, the others' wait
// times out naming that rank; once it enters, the exchange completes.
TEST_CASE("all_to_all: the watchdog names a rank that has not entered it", "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  at::Tensor input = at::full({p}, static_cast<double>(r), at::kDouble);
  at::Tensor output = at::zeros({p}, at::kDouble);
  at::Tensor go = at::zeros({1});
  if (r != p - 1) {
    auto work = world->all_to_all(output, input, {}, {});
    CHECK_THROWS_WITH(work->wait(std::chrono::milliseconds(300)),
                      Catch::Contains("all_to_all #") &&
                          Catch::Contains("not arrived: rank " + std::to_string(p - 1)));
    // The last rank enters only after every other rank's watchdog has looked (else a slow rank
    // could find it already inside).
    if (r != 0) world->send(go, 0, 78)->wait();
    if (r == 0) {
      for (int peer = 1; peer < p - 1; ++peer) world->recv(go, peer, 78)->wait();
      world->send(go, p - 1, 77)->wait();  // now let the last rank in
    }
    work->wait();
  } else {
    world->recv(go, 0, 77)->wait();
    world->all_to_all(output, input, {}, {})->wait();
  }
  CHECK(at::equal(output, at::arange(p, at::kDouble)));
  world->barrier()->wait();
}

// Work::synchronize orders later work after the op; on MPI (host-completed ops) it is a wait: the
// result is there and the op is complete when it returns.
TEST_CASE("synchronize: on MPI the op has completed when it returns", "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  at::Tensor value = at::full({3}, static_cast<float>(r + 1));
  comm::WorkPtr work = world->all_reduce(value, comm::ReduceOp::kSum);
  work->synchronize();
  CHECK(work->is_completed());
  CHECK(at::equal(value, at::full({3}, static_cast<float>(p * (p + 1) / 2))));
  world->barrier()->synchronize();
}

TEST_CASE("per-op options: a deadline of its own, and a synchronous op", "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  // async_op false: the op is complete when the call returns.
  comm::OpOptions synchronous;
  synchronous.async_op = false;
  at::Tensor value = at::full({5}, static_cast<float>(r + 1));
  CHECK(world->all_reduce(value, comm::ReduceOp::kSum, synchronous)->is_completed());
  CHECK(at::equal(value, at::full({5}, static_cast<float>(p * (p + 1) / 2))));
  // A per-op timeout replaces the communicator's (5 min) for that op's wait().
  comm::OpOptions quick;
  quick.timeout = std::chrono::milliseconds(30);
  if (r == 0) {
    at::Tensor in = at::zeros({1});
    auto recv = world->recv(in, 1, 52, quick);
    CHECK_THROWS_WITH(recv->wait(), Catch::Contains("did not complete within 0.03 s"));
    at::Tensor go = at::ones({1});
    world->send(go, 1, 53)->wait();
    recv->wait(std::chrono::minutes(1));
    CHECK(in.item<float>() == 7.0f);
  } else if (r == 1) {
    at::Tensor go = at::zeros({1});
    world->recv(go, 0, 53)->wait();
    at::Tensor seven = at::full({1}, 7.0f);
    world->send(seven, 0, 52)->wait();
  }
  world->barrier(synchronous);
}

// The staged backend (comm/staged_communicator.h) copies device tensors through host buffers; with
// stage_host_tensors it does so for CPU tensors too, so every copy path runs here without a GPU.
// Results must equal the plain MPI communicator's, bytes are the wrapped communicator's.
TEST_CASE("staged MPI: every op through host copies equals plain MPI, splits stay staged",
          "[comm]") {
  auto world = testing::world();
  const int p = world->size(), r = world->rank();
  auto staged = comm::make_staged_communicator(world, /*stage_host_tensors=*/true);
  CHECK(staged->backend() == "mpi+staged");
  CHECK(staged->rank() == r);
  const uint64_t bytes_before = world->stats().total_bytes();

  at::Tensor sum = rank_values(13, r, at::kFloat);
  staged->all_reduce(sum, ReduceOp::kSum)->wait();
  CHECK(at::equal(sum, expected_sum(13, p, at::kFloat)));
  CHECK(world->stats().total_bytes() > bytes_before);  // counted by the wrapped communicator

  const int64_t n = 4 * p + 1;  // uneven split
  const std::vector<int64_t> sizes = comm::split_sizes(n, p);
  at::Tensor shard = at::empty({sizes[r]}, at::kDouble);
  staged->reduce_scatter(shard, rank_values(n, r, at::kDouble), ReduceOp::kSum)->wait();
  CHECK(at::equal(
      shard, expected_sum(n, p, at::kDouble).narrow(0, comm::split_offset(n, p, r), sizes[r])));

  at::Tensor gathered = at::zeros({n}, at::kLong);
  const at::Tensor own =
      at::arange(comm::split_offset(n, p, r), comm::split_offset(n, p, r) + sizes[r], at::kLong);
  staged->all_gather(gathered, own)->wait();
  CHECK(at::equal(gathered, at::arange(n, at::kLong)));

  at::Tensor root_value = at::full({3}, r == p - 1 ? 7.0 : 0.0, at::kBFloat16);
  staged->broadcast(root_value, p - 1)->wait();
  CHECK(at::equal(root_value, at::full({3}, 7.0, at::kBFloat16)));

  // A ring of sends, synchronous (async_op false: complete on return).
  comm::OpOptions blocking;
  blocking.async_op = false;
  at::Tensor incoming = at::zeros({2}, at::kInt);
  auto receive = staged->recv(incoming, (r + p - 1) % p, 5);
  staged->send(at::full({2}, r, at::kInt), (r + 1) % p, 5, blocking);
  receive->wait();
  CHECK(at::equal(incoming, at::full({2}, (r + p - 1) % p, at::kInt)));

  at::Tensor rows = at::full({p, 2}, static_cast<double>(r), at::kFloat);
  at::Tensor exchanged = at::empty({p, 2}, at::kFloat);
  staged->all_to_all(exchanged, rows, {}, {})->wait();
  CHECK(at::equal(exchanged.select(1, 0), at::arange(p, at::kFloat)));

  auto halves = staged->split(r % 2, r, "parity");
  REQUIRE(halves);
  CHECK(halves->backend() == "mpi+staged");
  at::Tensor ones = at::ones({4}, at::kFloat);
  halves->all_reduce(ones, ReduceOp::kSum)->wait();
  CHECK(ones[0].item<float>() == static_cast<float>(halves->size()));
  staged->barrier()->wait();
}

TEST_CASE("the NCCL bootstrap id travels from rank 0 to every rank", "[comm]") {
  auto world = testing::world();
  std::vector<uint8_t> id(128, 0);
  if (world->rank() == 0)
    for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(255 - i);
  const std::vector<uint8_t> received = comm::broadcast_bootstrap_id(*world, id);
  REQUIRE(received.size() == 128);
  for (size_t i = 0; i < received.size(); ++i) CHECK(received[i] == static_cast<uint8_t>(255 - i));
  if (!comm::nccl_available()) {
    CHECK_THROWS_WITH(comm::make_nccl_communicator(world, c10::Device(c10::kCUDA, 0)),
                      Catch::Contains("this build has no CUDA/NCCL"));
  }
}

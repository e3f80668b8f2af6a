#include <catch2/catch.hpp>
#include <set>

#include "deepseek_train/core/error.h"
#include "deepseek_train/mesh/parallel_dims.h"

using namespace dst;

TEST_CASE("mesh: rank <-> coordinates is a bijection, tp innermost then dp then pp", "[mesh]") {
  for (int world = 1; world <= 8; ++world) {
    for (int tp = 1; tp <= world; ++tp) {
      for (int pp = 1; pp <= world; ++pp) {
        if (world % (tp * pp) != 0) continue;
        ParallelDims dims{world / (tp * pp), tp, pp};
        REQUIRE_NOTHROW(dims.validate(world));
        std::set<std::tuple<int, int, int>> seen;
        for (int rank = 0; rank < world; ++rank) {
          MeshCoord c = coord_of_rank(dims, rank);
          CHECK(rank_of_coord(dims, c) == rank);
          CHECK(c.tp == rank % tp);
          CHECK(c.dp == (rank / tp) % dims.dp);
          CHECK(c.pp == rank / (tp * dims.dp));
          seen.insert({c.dp, c.tp, c.pp});
        }
        CHECK(static_cast<int>(seen.size()) == world);
      }
    }
  }
  ParallelDims dims{2, 2, 2};
  CHECK(rank_of_coord(dims, {1, 0, 0}) == 2);
  CHECK(rank_of_coord(dims, {0, 1, 0}) == 1);
  CHECK(rank_of_coord(dims, {0, 0, 1}) == 4);
}

TEST_CASE("mesh: a layout that does not factor the world size is an error with the numbers",
          "[mesh]") {
  CHECK_THROWS_WITH((ParallelDims{2, 1, 1}.validate(4)),
                    Catch::Contains("dp(2) x tp(1) x pp(1) = 2 does not equal the world size 4"));
  CHECK_THROWS_WITH((ParallelDims{3, 2, 1}.validate(7)), Catch::Contains("world size 7"));
  CHECK_THROWS_AS((ParallelDims{0, 1, 1}.validate(0)), ConfigError);
  CHECK_THROWS_AS(coord_of_rank(ParallelDims{2, 1, 1}, 2), ConfigError);
}

TEST_CASE("mesh: named axes — HSDP rank order, validation in one place", "[mesh]") {
  ParallelDims dims;
  dims.dp_replicate = 2;
  dims.dp = 3;
  dims.tp = 2;
  dims.pp = 2;
  REQUIRE_NOTHROW(dims.validate(24));
  CHECK(dims.data_parallel_size() == 6);
  CHECK(dims.describe() == "dp_replicate=2 dp_shard=3 tp=2 pp=2");
  // tp innermost, then dp_shard, then dp_replicate, then pp.
  const MeshCoord c = coord_of_rank(dims, 1 + 2 * (2 + 3 * (1 + 2 * 1)));
  CHECK(c.tp == 1);
  CHECK(c.dp == 2);
  CHECK(c.dp_replicate == 1);
  CHECK(c.pp == 1);
  CHECK(c.data_parallel_index(dims) == 5);
  for (int rank = 0; rank < 24; ++rank)
    CHECK(rank_of_coord(dims, coord_of_rank(dims, rank)) == rank);
  // Without replicas the order is the three-axis mesh's.
  ParallelDims plain{2, 2, 2};
  CHECK(coord_of_rank(plain, 5) == coord_of_rank(ParallelDims{2, 2, 2, 1}, 5));
  CHECK(plain.describe() == "dp=2 tp=2 pp=2");

  CHECK_THROWS_WITH(dims.validate(12),
                    Catch::StartsWith("parallel: dp_replicate(2) x dp_shard(3) x tp(2) x pp(2) = "
                                      "24 does not equal the world size 12"));
  ParallelDims bad = dims;
  bad.dp_replicate = 0;
  CHECK_THROWS_WITH(bad.validate_axes(),
                    Catch::StartsWith("parallel.dp_replicate must be at least 1, got 0"));
  bad = dims;
  bad.cp = 2;
  CHECK_THROWS_WITH(bad.validate(48), Catch::StartsWith("parallel.cp = 2: context parallelism is "
                                                        "not implemented yet"));
  bad = dims;
  bad.ep = 2;
  CHECK_THROWS_WITH(bad.validate(24), Catch::StartsWith("parallel.ep = 2 must divide parallel.dp "
                                                        "(dp_shard) = 3"));
  bad.dp = 4;
  CHECK_NOTHROW(bad.validate(32));
  CHECK(bad.expert_shard_size() == 2);
  CHECK(bad.expert_data_parallel_size() == 4);  // with the replicas
  // ep borrows consecutive dp indices: dp index 3 is ep index 1 of the second expert copy; in
  // the second replica it is the fourth holder of those experts.
  const MeshCoord c3{3, 0, 0, 1};
  CHECK(c3.ep_index(bad) == 1);
  CHECK(c3.edp_index(bad) == 1);
  CHECK(c3.expert_data_parallel_index(bad) == 3);
}

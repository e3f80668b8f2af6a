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

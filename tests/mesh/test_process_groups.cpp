#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "deepseek_train/core/error.h"
#include "deepseek_train/mesh/process_groups.h"
#include "support/mpi_world.h"

using namespace dst;

TEST_CASE("process groups: one communicator per axis with the right members", "[mesh]") {
  auto world = testing::world();
  const int p = world->size();
  std::vector<ParallelDims> layouts = {{p, 1, 1}, {1, p, 1}, {1, 1, p}};
  if (p == 4)
    layouts.push_back({2, 2, 1}), layouts.push_back({1, 2, 2}), layouts.push_back({2, 1, 2});
  for (const ParallelDims& dims : layouts) {
    INFO(dims.describe());
    ProcessGroups groups = ProcessGroups::create(world, dims);
    const MeshCoord me = groups.coord();
    CHECK(groups.dp().size() == dims.dp);
    CHECK(groups.tp().size() == dims.tp);
    CHECK(groups.pp().size() == dims.pp);
    CHECK(groups.dp().rank() == me.dp);
    CHECK(groups.tp().rank() == me.tp);
    CHECK(groups.pp().rank() == me.pp);
    // Gathering global ranks over an axis lists exactly the ranks that differ only on that axis.
    auto check_axis = [&](comm::Communicator& group, auto coord_for) {
      at::Tensor mine = at::full({1}, static_cast<int64_t>(world->rank()), at::kLong);
      at::Tensor all = at::zeros({group.size()}, at::kLong);
      group.all_gather(all, mine)->wait();
      for (int i = 0; i < group.size(); ++i)
        CHECK(all[i].item<int64_t>() == rank_of_coord(dims, coord_for(i)));
    };
    check_axis(groups.dp(), [&](int i) { return MeshCoord{i, me.tp, me.pp}; });
    check_axis(groups.tp(), [&](int i) { return MeshCoord{me.dp, i, me.pp}; });
    check_axis(groups.pp(), [&](int i) { return MeshCoord{me.dp, me.tp, i}; });
  }
  CHECK_THROWS_WITH(ProcessGroups::create(world, ParallelDims{p + 1, 1, 1}),
                    Catch::Contains("does not equal the world size"));
}

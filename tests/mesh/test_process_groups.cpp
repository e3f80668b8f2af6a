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
  // Expert parallelism borrows from dp: ep groups of consecutive dp ranks, edp groups of the
  // ranks with the same ep index.
  std::vector<ParallelDims> expert_layouts = {{p, 1, 1, 1, 1, 2}};
  if (p == 4) expert_layouts.push_back({p, 1, 1, 1, 1, 4});
  if (p == 4) expert_layouts.push_back({2, 1, 1, 2, 1, 2});  // HSDP: 2 replicas of dp_shard 2
  for (const ParallelDims& dims : expert_layouts) {
    INFO(dims.describe());
    ProcessGroups groups = ProcessGroups::create(world, dims);
    const MeshCoord me = groups.coord();
    CHECK(groups.ep().size() == dims.ep);
    CHECK(groups.edp().size() == dims.expert_shard_size());
    CHECK(groups.ep().rank() == me.ep_index(dims));
    CHECK(groups.edp().rank() == me.edp_index(dims));
    at::Tensor mine = at::full({1}, static_cast<int64_t>(world->rank()), at::kLong);
    at::Tensor ep_members = at::zeros({dims.ep}, at::kLong);
    groups.ep().all_gather(ep_members, mine)->wait();
    for (int i = 0; i < dims.ep; ++i)
      CHECK(
          ep_members[i].item<int64_t>() ==
          rank_of_coord(dims, MeshCoord{me.edp_index(dims) * dims.ep + i, 0, 0, me.dp_replicate}));
    at::Tensor edp_members = at::zeros({groups.edp().size()}, at::kLong);
    groups.edp().all_gather(edp_members, mine)->wait();
    for (int i = 0; i < groups.edp().size(); ++i)
      CHECK(edp_members[i].item<int64_t>() ==
            rank_of_coord(dims, MeshCoord{i * dims.ep + me.ep_index(dims), 0, 0, me.dp_replicate}));
    // Every data-parallel rank with these experts, replica-major.
    comm::Communicator& holders = groups.expert_data_parallel();
    CHECK(holders.size() == dims.expert_data_parallel_size());
    CHECK(holders.rank() == me.expert_data_parallel_index(dims));
    at::Tensor holder_ranks = at::zeros({holders.size()}, at::kLong);
    holders.all_gather(holder_ranks, mine)->wait();
    const int shard = dims.expert_shard_size();
    for (int i = 0; i < holders.size(); ++i)
      CHECK(holder_ranks[i].item<int64_t>() ==
            rank_of_coord(dims,
                          MeshCoord{(i % shard) * dims.ep + me.ep_index(dims), 0, 0, i / shard}));
  }
  CHECK_THROWS_WITH(ProcessGroups::create(world, ParallelDims{p + 1, 1, 1}),
                    Catch::Contains("does not equal the world size"));
}

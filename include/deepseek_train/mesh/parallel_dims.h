// The parallel layout: how many ranks along each named axis and how a global rank maps to
// coordinates. Axes (torchtitan's names): dp_replicate (HSDP replicas), dp_shard (the ranks
// ZeRO shards over; recipe key parallel.dp_shard, alias parallel.dp), cp (context parallel, not
// implemented yet), tp, pp, ep (expert parallel). The data-parallel degree is
// dp_replicate x dp_shard. ep borrows from dp_shard as in torchtitan (it adds no ranks): the
// dp_shard ranks split into dp / ep expert-data-parallel groups of ep consecutive ones, each
// holding all routed experts between them; a rank's ep index is dp_index % ep, its edp index
// (which copy of its experts it holds) dp_index / ep. Rank order, innermost first: tp, dp_shard,
// dp_replicate, pp:
//   rank = tp_index + tp * (dp_index + dp * (dp_replicate_index + dp_replicate * pp_index))
// so tensor-parallel peers are neighbours (same node), a shard group stays inside a node before
// replicas spread across nodes, and pipeline stages are farthest apart. With dp_replicate = 1
// this is the order of the three-axis mesh before HSDP.
#pragma once

#include <string>

namespace dst {

struct ParallelDims {
  int dp = 1;  // dp_shard
  int tp = 1;
  int pp = 1;
  int dp_replicate = 1;
  int cp = 1;
  int ep = 1;

  int data_parallel_size() const { return dp_replicate * dp; }
  // Ranks of one dp_shard group holding the same routed experts (their ZeRO shards span them),
  // and of all data-parallel ranks (HSDP replicas included).
  int expert_shard_size() const { return dp / ep; }
  int expert_data_parallel_size() const { return dp_replicate * dp / ep; }
  int world_size() const { return dp_replicate * dp * tp * pp; }
  // The one place the layout's rules are checked. validate_axes throws ConfigError naming the axis
  // and the number when an axis is < 1, an axis not implemented yet is > 1 or ep does not divide
  // dp_shard; validate also when the product of the axes is not world_size.
  void validate_axes() const;
  void validate(int world_size) const;
  std::string describe() const;
};

struct MeshCoord {
  int dp = 0;  // index along dp_shard
  int tp = 0;
  int pp = 0;
  int dp_replicate = 0;
  bool operator==(const MeshCoord& o) const {
    return dp == o.dp && tp == o.tp && pp == o.pp && dp_replicate == o.dp_replicate;
  }
  // Index among all data-parallel ranks (replica-major): which slice of the data this rank reads.
  int data_parallel_index(const ParallelDims& dims) const { return dp_replicate * dims.dp + dp; }
  // Position in the ep group (which routed experts the rank holds) and in the
  // expert-data-parallel group.
  int ep_index(const ParallelDims& dims) const { return dp % dims.ep; }
  int edp_index(const ParallelDims& dims) const { return dp / dims.ep; }
  // Among every data-parallel rank holding the same experts (replica-major).
  int expert_data_parallel_index(const ParallelDims& dims) const {
    return dp_replicate * (dims.dp / dims.ep) + edp_index(dims);
  }
};

MeshCoord coord_of_rank(const ParallelDims& dims, int rank);
int rank_of_coord(const ParallelDims& dims, const MeshCoord& coord);

}  // namespace dst

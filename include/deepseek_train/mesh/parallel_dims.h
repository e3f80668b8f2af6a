// The parallel layout: how many ranks along each axis (data, tensor, pipeline) and how a global
// rank maps to coordinates. Rank order: tp innermost, then dp, then pp:
//   rank = tp_index + tp * (dp_index + dp * pp_index)
// so tensor-parallel peers are neighbours (same node), and pipeline stages are farthest apart.
#pragma once

#include <string>

namespace dst {

struct ParallelDims {
  int dp = 1;
  int tp = 1;
  int pp = 1;

  int world_size() const { return dp * tp * pp; }
  // Throws ConfigError when an axis is < 1 or dp*tp*pp != world_size; the message has the numbers.
  void validate(int world_size) const;
  std::string describe() const;
};

struct MeshCoord {
  int dp = 0;
  int tp = 0;
  int pp = 0;
  bool operator==(const MeshCoord& o) const { return dp == o.dp && tp == o.tp && pp == o.pp; }
};

MeshCoord coord_of_rank(const ParallelDims& dims, int rank);
int rank_of_coord(const ParallelDims& dims, const MeshCoord& coord);

}  // namespace dst

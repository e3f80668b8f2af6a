#include "deepseek_train/mesh/parallel_dims.h"

#include <sstream>

#include "deepseek_train/core/error.h"

namespace dst {

void ParallelDims::validate(int world_size) const {
  DST_CHECK(dp >= 1 && tp >= 1 && pp >= 1, ConfigError,
            "parallel: dp, tp and pp must each be at least 1, got " << describe());
  DST_CHECK(dp * tp * pp == world_size, ConfigError,
            "parallel: dp(" << dp << ") x tp(" << tp << ") x pp(" << pp << ") = " << dp * tp * pp
                            << " does not equal the world size " << world_size);
}

std::string ParallelDims::describe() const {
  std::ostringstream out;
  out << "dp=" << dp << " tp=" << tp << " pp=" << pp;
  return out.str();
}

MeshCoord coord_of_rank(const ParallelDims& dims, int rank) {
  DST_CHECK(rank >= 0 && rank < dims.world_size(), ConfigError,
            "rank " << rank << " is outside the mesh " << dims.describe());
  MeshCoord c;
  c.tp = rank % dims.tp;
  c.dp = (rank / dims.tp) % dims.dp;
  c.pp = rank / (dims.tp * dims.dp);
  return c;
}

int rank_of_coord(const ParallelDims& dims, const MeshCoord& c) {
  DST_CHECK(
      c.dp >= 0 && c.dp < dims.dp && c.tp >= 0 && c.tp < dims.tp && c.pp >= 0 && c.pp < dims.pp,
      ConfigError, "mesh coordinate out of range for " << dims.describe());
  return c.tp + dims.tp * (c.dp + dims.dp * c.pp);
}

}  // namespace dst

#include "deepseek_train/mesh/parallel_dims.h"

#include <sstream>
#include <utility>

#include "deepseek_train/core/error.h"

namespace dst {

void ParallelDims::validate_axes() const {
  const std::pair<const char*, int> axes[] = {
      {"dp_replicate", dp_replicate}, {"dp", dp}, {"cp", cp}, {"tp", tp}, {"pp", pp}, {"ep", ep}};
  for (const auto& [name, size] : axes)
    DST_CHECK(size >= 1, ConfigError, "parallel." << name << " must be at least 1, got " << size);
  DST_CHECK(cp == 1, ConfigError,
            "parallel.cp = " << cp << ": context parallelism is not implemented yet (use cp: 1)");
  DST_CHECK(dp % ep == 0, ConfigError,
            "parallel.ep = " << ep << " must divide parallel.dp (dp_shard) = " << dp
                             << ": expert parallelism splits the experts over groups of ep "
                                "data-parallel ranks");
}

void ParallelDims::validate(int world_size) const {
  validate_axes();
  if (dp_replicate == 1) {
    DST_CHECK(dp * tp * pp == world_size, ConfigError,
              "parallel: dp(" << dp << ") x tp(" << tp << ") x pp(" << pp << ") = " << dp * tp * pp
                              << " does not equal the world size " << world_size);
  } else {
    DST_CHECK(this->world_size() == world_size, ConfigError,
              "parallel: dp_replicate(" << dp_replicate << ") x dp_shard(" << dp << ") x tp(" << tp
                                        << ") x pp(" << pp << ") = " << this->world_size()
                                        << " does not equal the world size " << world_size);
  }
}

std::string ParallelDims::describe() const {
  std::ostringstream out;
  if (dp_replicate > 1)
    out << "dp_replicate=" << dp_replicate << " dp_shard=";
  else
    out << "dp=";
  out << dp << " tp=" << tp << " pp=" << pp;
  if (cp > 1) out << " cp=" << cp;
  if (ep > 1) out << " ep=" << ep;
  return out.str();
}

MeshCoord coord_of_rank(const ParallelDims& dims, int rank) {
  DST_CHECK(rank >= 0 && rank < dims.world_size(), ConfigError,
            "rank " << rank << " is outside the mesh " << dims.describe());
  MeshCoord c;
  c.tp = rank % dims.tp;
  c.dp = (rank / dims.tp) % dims.dp;
  c.dp_replicate = (rank / (dims.tp * dims.dp)) % dims.dp_replicate;
  c.pp = rank / (dims.tp * dims.dp * dims.dp_replicate);
  return c;
}

int rank_of_coord(const ParallelDims& dims, const MeshCoord& c) {
  DST_CHECK(c.dp >= 0 && c.dp < dims.dp && c.tp >= 0 && c.tp < dims.tp && c.pp >= 0 &&
                c.pp < dims.pp && c.dp_replicate >= 0 && c.dp_replicate < dims.dp_replicate,
            ConfigError, "mesh coordinate out of range for " << dims.describe());
  return c.tp + dims.tp * (c.dp + dims.dp * (c.dp_replicate + dims.dp_replicate * c.pp));
}

}  // namespace dst

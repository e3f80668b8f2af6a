#include "deepseek_train/mesh/process_groups.h"

#include "deepseek_train/core/error.h"

namespace dst {

ProcessGroups ProcessGroups::create(comm::CommunicatorPtr world, const ParallelDims& dims) {
  DST_ASSERT(world != nullptr, "world communicator is null");
  dims.validate(world->size());
  ProcessGroups groups;
  groups.dims_ = dims;
  groups.coord_ = coord_of_rank(dims, world->rank());
  groups.world_ = world;
  const MeshCoord& c = groups.coord_;
  // Color = the coordinates that stay fixed within the group; key = position along the axis.
  groups.tp_ = world->split(c.dp + dims.dp * c.pp, c.tp, "tp");
  groups.dp_ = world->split(c.tp + dims.tp * c.pp, c.dp, "dp");
  groups.pp_ = world->split(c.tp + dims.tp * c.dp, c.pp, "pp");
  DST_ASSERT(groups.dp_->size() == dims.dp && groups.tp_->size() == dims.tp &&
                 groups.pp_->size() == dims.pp,
             "split produced groups of the wrong size");
  return groups;
}

comm::CommStats ProcessGroups::total_stats() const {
  comm::CommStats total;
  for (const auto& group : {world_, dp_, tp_, pp_})
    if (group) total.accumulate(group->stats());
  return total;
}

}  // namespace dst

#include "deepseek_train/mesh/process_groups.h"

#include "deepseek_train/comm/local_communicator.h"
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
  const int T = dims.tp, D = dims.dp, R = dims.dp_replicate;
  // Color = the coordinates that stay fixed within the group; key = position along the axis.
  // With one replica the colors are those of the three-axis mesh.
  groups.tp_ = world->split(c.dp + D * (c.dp_replicate + R * c.pp), c.tp, "tp");
  groups.dp_ = world->split(c.tp + T * (c.dp_replicate + R * c.pp), c.dp, "dp");
  groups.pp_ = world->split(c.tp + T * (c.dp + D * c.dp_replicate), c.pp, "pp");
  if (R == 1) {
    groups.dp_replicate_ = comm::make_local_communicator("dp_replicate");
    groups.data_parallel_ = groups.dp_;
  } else {
    groups.dp_replicate_ =
        world->split(c.tp + T * (c.dp + D * c.pp), c.dp_replicate, "dp_replicate");
    groups.data_parallel_ = world->split(c.tp + T * c.pp, c.data_parallel_index(dims), "dp_all");
  }
  if (dims.ep == 1) {
    groups.ep_ = comm::make_local_communicator("ep");
    groups.edp_ = groups.dp_;
    groups.expert_data_parallel_ = groups.data_parallel_;
    groups.expert_dp_replicate_ = groups.dp_replicate_;
  } else {  // within the dp group: ep consecutive ranks, and the ranks with one ep index
    groups.ep_ = groups.dp_->split(c.edp_index(dims), c.ep_index(dims), "ep");
    groups.edp_ = groups.dp_->split(c.ep_index(dims), c.edp_index(dims), "edp");
    groups.expert_data_parallel_ =
        R == 1 ? groups.edp_
               : groups.data_parallel_->split(c.ep_index(dims), c.expert_data_parallel_index(dims),
                                              "edp_all");
    groups.expert_dp_replicate_ =
        R == 1 ? groups.dp_replicate_
               : groups.dp_replicate_->split(0, c.dp_replicate, "edp_replicate");
  }
  DST_ASSERT(groups.dp_->size() == D && groups.tp_->size() == T && groups.pp_->size() == dims.pp &&
                 groups.dp_replicate_->size() == R &&
                 groups.data_parallel_->size() == dims.data_parallel_size() &&
                 groups.ep_->size() == dims.ep && groups.edp_->size() == dims.expert_shard_size() &&
                 groups.expert_data_parallel_->size() == dims.expert_data_parallel_size(),
             "split produced groups of the wrong size");
  return groups;
}

comm::CommStats ProcessGroups::total_stats() const {
  comm::CommStats total;
  for (const auto& group : {world_, dp_, dp_replicate_, tp_, pp_, ep_})
    if (group) total.accumulate(group->stats());
  if (edp_ && edp_ != dp_) total.accumulate(edp_->stats());
  if (expert_data_parallel_ && expert_data_parallel_ != edp_ &&
      expert_data_parallel_ != data_parallel_)
    total.accumulate(expert_data_parallel_->stats());
  if (expert_dp_replicate_ && expert_dp_replicate_ != dp_replicate_)
    total.accumulate(expert_dp_replicate_->stats());
  if (data_parallel_ && data_parallel_ != dp_) total.accumulate(data_parallel_->stats());
  return total;
}

}  // namespace dst

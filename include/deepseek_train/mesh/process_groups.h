// One communicator per parallel axis, built once from the world communicator and passed
// explicitly to whoever needs it (no global process-group registry).
#pragma once

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/mesh/parallel_dims.h"

namespace dst {

class ProcessGroups {
 public:
  // Collective over `world`: validates dims against world->size() (ConfigError) and splits one
  // communicator per axis. The dp group of a rank holds the ranks with its tp, dp_replicate and pp
  // indices (the ranks ZeRO shards over), etc.; data_parallel() is dp_replicate x dp_shard (the
  // ranks that split the data), the same communicator as dp() when dp_replicate is 1. ep() holds
  // the ranks that split the routed experts (ep consecutive dp_shard ranks); edp() the ranks of the
  // dp_shard group holding the same experts (dp / ep; dp() itself when ep is 1), across which ZeRO
  // shards their state; expert_data_parallel() those of every data-parallel rank (HSDP replicas
  // too; edp() without replicas); expert_dp_replicate() has dp_replicate()'s members, a
  // communicator of its own so the experts' replica sums never interleave with the others'.
  static ProcessGroups create(comm::CommunicatorPtr world, const ParallelDims& dims);

  const ParallelDims& dims() const { return dims_; }
  const MeshCoord& coord() const { return coord_; }
  comm::Communicator& world() const { return *world_; }
  comm::Communicator& dp() const { return *dp_; }
  comm::Communicator& dp_replicate() const { return *dp_replicate_; }
  comm::Communicator& data_parallel() const { return *data_parallel_; }
  comm::Communicator& tp() const { return *tp_; }
  comm::Communicator& pp() const { return *pp_; }
  comm::Communicator& ep() const { return *ep_; }
  comm::Communicator& edp() const { return *edp_; }
  comm::Communicator& expert_data_parallel() const { return *expert_data_parallel_; }
  comm::Communicator& expert_dp_replicate() const { return *expert_dp_replicate_; }
  comm::CommunicatorPtr world_ptr() const { return world_; }
  comm::CommunicatorPtr dp_ptr() const { return dp_; }
  comm::CommunicatorPtr dp_replicate_ptr() const { return dp_replicate_; }
  comm::CommunicatorPtr data_parallel_ptr() const { return data_parallel_; }
  comm::CommunicatorPtr tp_ptr() const { return tp_; }
  comm::CommunicatorPtr pp_ptr() const { return pp_; }
  comm::CommunicatorPtr ep_ptr() const { return ep_; }
  comm::CommunicatorPtr edp_ptr() const { return edp_; }
  comm::CommunicatorPtr expert_data_parallel_ptr() const { return expert_data_parallel_; }
  comm::CommunicatorPtr expert_dp_replicate_ptr() const { return expert_dp_replicate_; }

  // Sum of every group's byte counters (world + axes, each communicator once).
  comm::CommStats total_stats() const;

 private:
  ParallelDims dims_;
  MeshCoord coord_;
  comm::CommunicatorPtr world_, dp_, dp_replicate_, data_parallel_, tp_, pp_, ep_, edp_,
      expert_data_parallel_, expert_dp_replicate_;
};

}  // namespace dst

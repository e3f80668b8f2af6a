// Launch-environment detection: works out this process's rank, world size, local rank and local
// size from the variables set by OpenMPI (OMPI_COMM_WORLD_*), PMI/PMIx (PMI_RANK, PMIX_RANK, ...)
// and Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, ...). Read once at start-up and logged.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace dst {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string launcher = "none";  // "openmpi", "slurm", "pmix", "pmi" or "none"

  std::string describe() const;
};

// Looks a variable up; returns nullopt when unset. Injected so tests need not touch the process
// environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// The real process environment.
EnvLookup process_env();

// Detects the launch environment. Precedence: OpenMPI, then Slurm, then PMIx, then PMI; a single
// process when none is set. Malformed values throw ConfigError naming the variable.
LaunchEnv detect_launch_env(const EnvLookup& lookup);

// Number of CPU cores this process may run on (its sched affinity mask).
int affinity_cores();
// Number of CPU cores of the machine.
int hardware_cores();

// Intra-op threads for libtorch: `requested` if > 0, else the node's cores shared among its local
// ranks, capped by the process's affinity (a launcher that binds ranks has already divided them):
// max(1, min(affinity, hardware / local_size)).
int default_intra_op_threads(int requested, int affinity, int hardware, int local_size);

}  // namespace dst

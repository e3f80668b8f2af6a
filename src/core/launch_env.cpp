#include "deepseek_train/core/launch_env.h"

#include <sched.h>

#include <cstdlib>
#include <sstream>
#include <thread>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

int parse_int_var(const EnvLookup& lookup, const std::string& name, int fallback, bool* found) {
  auto value = lookup(name);
  if (!value) return fallback;
  if (found) *found = true;
  try {
    size_t used = 0;
    long parsed = std::stol(*value, &used);
    if (used != value->size() || parsed < 0 || parsed > (1 << 24)) throw std::invalid_argument("");
    return static_cast<int>(parsed);
  } catch (const std::exception&) {
    DST_THROW(ConfigError, "environment variable " << name << "='" << *value
                                                   << "' is not a non-negative integer");
  }
}

// Slurm's compressed per-node task counts ("2(x3),1": nodes 0-2 run 2 tasks, node 3 runs 1): the
// count of node `node`, or 0 when the list is malformed or shorter.
int slurm_tasks_on_node(const std::string& list, int node) {
  std::stringstream in(list);
  std::string item;
  int first = 0;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      const int count = std::stoi(item, &used);
      int repeat = 1;
      if (used != item.size()) {
        const std::string rest = item.substr(used);  // "(xM)"
        if (rest.size() < 4 || rest.compare(0, 2, "(x") != 0 || rest.back() != ')') return 0;
        size_t digits = 0;
        repeat = std::stoi(rest.substr(2, rest.size() - 3), &digits);
        if (digits != rest.size() - 3 || repeat < 1) return 0;
      }
      if (node < first + repeat) return count;
      first += repeat;
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

struct Scheme {
  const char* launcher;
  const char* rank;
  const char* size;
  const char* local_rank;
  const char* local_size;
};

}  // namespace

std::string LaunchEnv::describe() const {
  std::ostringstream out;
  out << "launcher=" << launcher << " rank=" << rank << " world_size=" << world_size
      << " local_rank=" << local_rank << " local_size=" << local_size;
  return out.str();
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (!value) return std::nullopt;
    return std::string(value);
  };
}

LaunchEnv detect_launch_env(const EnvLookup& lookup) {
  // Slurm: only inside a job step (srun sets SLURM_STEP_ID). A batch script or salloc shell also
  // has SLURM_PROCID=0 and SLURM_NTASKS=<the job's tasks>, but it is one process, not rank 0 of
  // many. The local size is this node's entry of SLURM_STEP_TASKS_PER_NODE ("2(x3),1"), else
  // SLURM_NTASKS_PER_NODE (the job's, which a smaller step does not change), else
  // SLURM_NTASKS / SLURM_NNODES rounded up.
  static const Scheme kSchemes[] = {
      {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", nullptr},
      {"pmix", "PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"},
      {"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
  };
  for (const Scheme& scheme : kSchemes) {
    const bool slurm = std::string(scheme.launcher) == "slurm";
    if (slurm && !lookup("SLURM_STEP_ID") && !lookup("SLURM_STEPID")) continue;
    bool has_rank = false;
    int rank = parse_int_var(lookup, scheme.rank, 0, &has_rank);
    if (!has_rank) continue;
    LaunchEnv env;
    env.launcher = scheme.launcher;
    env.rank = rank;
    env.world_size = parse_int_var(lookup, scheme.size, 1, nullptr);
    env.local_rank = parse_int_var(lookup, scheme.local_rank, 0, nullptr);
    if (scheme.local_size) {
      env.local_size = parse_int_var(lookup, scheme.local_size, 1, nullptr);
    } else {
      int nodes = parse_int_var(lookup, "SLURM_NNODES", 1, nullptr);
      nodes = nodes > 0 ? nodes : 1;
      env.local_size = 0;
      if (auto per_node = lookup("SLURM_STEP_TASKS_PER_NODE"))
        env.local_size =
            slurm_tasks_on_node(*per_node, parse_int_var(lookup, "SLURM_NODEID", 0, nullptr));
      if (env.local_size == 0)
        env.local_size = parse_int_var(lookup, "SLURM_NTASKS_PER_NODE", 0, nullptr);
      if (env.local_size == 0) env.local_size = (env.world_size + nodes - 1) / nodes;
    }
    DST_CHECK(env.world_size >= 1, ConfigError, scheme.size << " must be at least 1");
    DST_CHECK(
        env.rank < env.world_size, ConfigError,
        scheme.rank << "=" << env.rank << " is not below " << scheme.size << "=" << env.world_size);
    if (env.local_size < 1) env.local_size = 1;
    if (env.local_rank >= env.local_size) env.local_size = env.local_rank + 1;
    return env;
  }
  return LaunchEnv{};
}

int affinity_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
  return hardware_cores();
}

int hardware_cores() {
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

int default_intra_op_threads(int requested, int affinity, int hardware, int local_size) {
  if (requested > 0) return requested;
  int per_rank = hardware / (local_size > 0 ? local_size : 1);
  if (affinity < per_rank) per_rank = affinity;
  return per_rank > 0 ? per_rank : 1;
}

}  // namespace dst

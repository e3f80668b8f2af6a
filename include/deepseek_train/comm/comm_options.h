// Options of the communication layer (torch-free, filled by the recipe module).
#pragma once

#include <string>

namespace dst {

struct CommOptions {
  // "auto" (MPI when launched by mpirun/srun, else single process), "mpi" or "local".
  std::string backend = "auto";
  // Deadline of every Work::wait() in seconds.
  double timeout_s = 300.0;
};

}  // namespace dst

// What this build of the library holds: the libtorch it was compiled against and whether its
// CUDA/NCCL parts are in (CMake option DST_WITH_CUDA: AUTO builds them when the CUDA toolkit and
// NCCL are found), with the toolkit version compiled against and the NCCL library's own version.
#pragma once

#include <string>

namespace dst {

struct BuildInfo {
  std::string libtorch;    // e.g. "2.11.0"
  bool with_cuda = false;  // the CUDA/NCCL parts are compiled in
  std::string cuda;        // CUDA toolkit compiled against, e.g. "13.0"; empty without CUDA
  std::string nccl;        // NCCL library loaded at run time, e.g. "2.28.9"; empty without CUDA
  // The git commit the library was configured from ("unknown" outside a git checkout).
  std::string source_commit;

  // One line: "libtorch 2.11.0, CUDA 13.0, NCCL 2.28.9" or "libtorch 2.11.0, CPU only".
  std::string describe() const;
};

BuildInfo build_info();

}  // namespace dst

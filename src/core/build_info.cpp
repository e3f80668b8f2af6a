#include "deepseek_train/core/build_info.h"

#include <torch/version.h>  // TORCH_VERSION

#ifdef DST_WITH_CUDA
#include <cuda.h>
#include <nccl.h>
#endif

namespace dst {
namespace {

// "major.minor[.patch]" of a version code major * major_divisor + minor * minor_divisor + patch
// (CUDA: 13000 -> "13.0" with 1000, 10; NCCL: 22809 -> "2.28.9" with 10000, 100).
std::string dotted(int code, int major_divisor, int minor_divisor, bool with_patch) {
  std::string text = std::to_string(code / major_divisor) + "." +
                     std::to_string(code % major_divisor / minor_divisor);
  if (with_patch) text += "." + std::to_string(code % minor_divisor);
  return text;
}

}  // namespace

std::string BuildInfo::describe() const {
  std::string line = "libtorch " + libtorch;
  if (!with_cuda) return line + ", CPU only";
  return line + ", CUDA " + cuda + ", NCCL " + nccl;
}

BuildInfo build_info() {
  BuildInfo info;
  info.libtorch = TORCH_VERSION;
#ifdef DST_SOURCE_COMMIT
  info.source_commit = DST_SOURCE_COMMIT;
#else
  info.source_commit = "unknown";
#endif
#ifdef DST_WITH_CUDA
  info.with_cuda = true;
  info.cuda = dotted(CUDA_VERSION, 1000, 10, false);
  int nccl_code = 0;
  // NCCL >= 2.9 codes versions as major*10000 + minor*100 + patch.
  info.nccl = ncclGetVersion(&nccl_code) == ncclSuccess ? dotted(nccl_code, 10000, 100, true)
                                                        : std::string("unknown");
#endif
  return info;
}

}  // namespace dst

// Single-process communicator (size 1): every collective is a local copy that completes at once.
// Used by unit tests and by `dstrain train` when it is not launched under MPI.
#pragma once

#include "deepseek_train/comm/communicator.h"

namespace dst::comm {

CommunicatorPtr make_local_communicator(const std::string& name = "world");

}  // namespace dst::comm

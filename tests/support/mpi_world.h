// Test support for multi-process tests: the MPI world communicator created by mpi_main.cpp.
#pragma once

#include "deepseek_train/comm/communicator.h"

namespace dst::testing {

// The world communicator of this test process (valid for the whole test run).
comm::CommunicatorPtr world();

}  // namespace dst::testing

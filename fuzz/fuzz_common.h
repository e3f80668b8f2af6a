// Shared by the fuzz targets: the one rule every parser must follow on bad input is to throw a
// dst::Error (never InternalError, which marks a library bug) with a one-line message. Anything
// else -- another exception type, a multi-line message, a crash, a sanitizer report, a hang -- is
// reported to libFuzzer as a crash (abort()). DST_FUZZ_VERBOSE=1 prints every rejection.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include "deepseek_train/core/error.h"

namespace dst_fuzz {

[[noreturn]] inline void fail(const std::string& what, const std::string& detail) {
  std::fprintf(stderr, "\n==FUZZ FAILURE== %s: %s\n", what.c_str(), detail.c_str());
  std::fflush(stderr);
  std::abort();
}

inline void check(bool condition, const std::string& what) {
  if (!condition) fail("invariant violated", what);
}

// Runs `parse`; returns true when it returned, false when it threw an acceptable dst::Error.
template <typename F>
bool expect_only_dst_errors(F&& parse) {
  try {
    parse();
    return true;
  } catch (const dst::InternalError& e) {
    fail("InternalError (a library bug) on input", e.what());
  } catch (const dst::Error& e) {
    const std::string message = e.what();
    if (message.find('\n') != std::string::npos || message.find('\r') != std::string::npos)
      fail(std::string(typeid(e).name()) + " with a multi-line message", message);
    if (message.empty()) fail(typeid(e).name(), "empty message");
    // DST_FUZZ_VERBOSE=1 shows why each input was rejected (to check seeds and regressions).
    static const bool verbose = std::getenv("DST_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "rejected: %s\n", message.c_str());
    return false;
  } catch (const std::exception& e) {
    fail(std::string("non-dst exception ") + typeid(e).name(), e.what());
  } catch (...) {
    fail("non-std exception", "(unknown type)");
  }
}

}  // namespace dst_fuzz

// Where tests find the project's shared test data (tokenizers, tiny-llama-2, War and Peace):
// $DST_SHARED_DATA when set, else the `shared/data` folder beside the source tree. Missing data
// fails the test that needs it (a Catch2 REQUIRE), never skips it: a check that did not run must
// not count as a pass.
#pragma once

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>

#ifndef DST_SOURCE_DIR
#error "tests are compiled with DST_SOURCE_DIR (tests/CMakeLists.txt)"
#endif

namespace dst::testing {

inline std::filesystem::path shared_data_dir() {
  const char* env = std::getenv("DST_SHARED_DATA");
  if (env != nullptr && *env != '\0') return env;
  return std::filesystem::path(DST_SOURCE_DIR) / ".." / "shared" / "data";
}

// `relative` under the shared data folder; fails the calling test when it does not exist.
inline std::filesystem::path shared_data(const std::string& relative) {
  const std::filesystem::path path = shared_data_dir() / relative;
  INFO("shared test data " << path.string() << " (set DST_SHARED_DATA)");
  REQUIRE(std::filesystem::exists(path));
  return path;
}

}  // namespace dst::testing

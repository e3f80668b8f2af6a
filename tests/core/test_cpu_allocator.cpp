// The mapped CPU allocator (core/cpu_allocator.h): large blocks come from their own mappings,
// aligned and reused for the same length, every byte is reported to c10's memory hook (what the
// tests' AllocationCounter and the profiler count), and the names are checked.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cstdint>

#include "deepseek_train/core/cpu_allocator.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/train/train_config.h"
#include "support/held_memory.h"

using namespace dst;

TEST_CASE("cpu allocator: mapped blocks are aligned, reused, reported and freed", "[core]") {
  use_cpu_allocator("mapped");
  dst::testing::AllocationCounter counted;
  const void* first = nullptr;
  {
    torch::Tensor large = torch::full({1 << 20}, 2.0f);  // 4 MiB: a mapping of its own
    torch::Tensor small = torch::full({100}, 3.0f);      // from malloc
    first = large.data_ptr();
    CHECK(reinterpret_cast<uintptr_t>(large.data_ptr()) % 64 == 0);
    CHECK(reinterpret_cast<uintptr_t>(small.data_ptr()) % 64 == 0);
    CHECK(large.sum().item<float>() == 2.0f * (1 << 20));
    CHECK(small.sum().item<float>() == 300.0f);
    CHECK(counted.live_bytes() == (int64_t{4} << 20) + 400);
  }
  CHECK(counted.live_bytes() == 0);
  CHECK(counted.peak_bytes() >= (int64_t{4} << 20) + 400);  // plus the sums' scalars
  CHECK(counted.peak_bytes() <= (int64_t{4} << 20) + 400 + 64);
  // The freed mapping serves the next request of the same length.
  torch::Tensor again = torch::empty({1 << 20});
  CHECK(again.data_ptr() == first);
  // No cache: the mapping is returned at once (a new request may land anywhere).
  use_cpu_allocator("mapped", /*cache_bytes=*/0);
  again = torch::Tensor();
  torch::Tensor other = torch::ones({3 << 20});
  CHECK(other.sum().item<float>() == 3 << 20);
  use_cpu_allocator("mapped");
}

TEST_CASE("cpu allocator: unknown names are one-line errors", "[core]") {
  CHECK_THROWS_WITH(use_cpu_allocator("tcmalloc"),
                    Catch::StartsWith("cpu allocator 'tcmalloc' is not one of mapped, default"));
  TrainConfig config;
  config.train.cpu_allocator = "jemalloc";
  CHECK_THROWS_WITH(
      config.validate(),
      Catch::StartsWith("train.cpu_allocator 'jemalloc' is not one of mapped, default"));
  config.train.cpu_allocator = "mapped";
  config.train.cpu_allocator_cache_mb = -1;
  CHECK_THROWS_WITH(config.validate(),
                    Catch::StartsWith("train.cpu_allocator_cache_mb must be non-negative"));
}

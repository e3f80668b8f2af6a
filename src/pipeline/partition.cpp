#include "deepseek_train/pipeline/partition.h"

#include <cstdint>

#include "deepseek_train/core/error.h"

namespace dst {

std::vector<LayerChunk> partition_layers(int64_t num_layers, int pp, int virtual_stages,
                                         const std::vector<int64_t>& layers_per_stage) {
  DST_CHECK(pp >= 1, ConfigError, "parallel.pp must be at least 1, got " << pp);
  DST_CHECK(virtual_stages >= 1, ConfigError,
            "parallel.virtual_stages must be at least 1, got " << virtual_stages);
  const int64_t stages = static_cast<int64_t>(pp) * virtual_stages;
  // One chunk per stage is allocated below: bound them before a recipe can ask for billions.
  constexpr int64_t kMaxStages = int64_t{1} << 16;
  DST_CHECK(stages <= kMaxStages, ConfigError,
            "parallel.pp x parallel.virtual_stages = "
                << stages << " pipeline stages exceeds the limit of " << kMaxStages);
  std::vector<int64_t> counts = layers_per_stage;
  if (counts.empty()) {
    DST_CHECK(num_layers >= stages, ConfigError,
              "parallel.pp x parallel.virtual_stages = " << stages << " pipeline stages but only "
                                                         << num_layers << " layers");
    for (int64_t s = 0; s < stages; ++s)
      counts.push_back(num_layers / stages + (s < num_layers % stages ? 1 : 0));
  } else {
    DST_CHECK(static_cast<int64_t>(counts.size()) == stages, ConfigError,
              "parallel.layers_per_stage has " << counts.size() << " entries, expected pp x "
                                               << "virtual_stages = " << stages);
    int64_t total = 0;
    for (int64_t c : counts) {
      DST_CHECK(c >= 0, ConfigError, "parallel.layers_per_stage entries must be >= 0, got " << c);
      DST_CHECK(!__builtin_add_overflow(total, c, &total), ConfigError,
                "parallel.layers_per_stage sums past " << INT64_MAX << " layers");
    }
    DST_CHECK(total == num_layers, ConfigError,
              "parallel.layers_per_stage sums to " << total << " but the model has " << num_layers
                                                   << " layers");
  }
  std::vector<LayerChunk> result;
  int64_t next = 0;
  for (int64_t s = 0; s < stages; ++s) {
    LayerChunk chunk;
    chunk.begin = next;
    chunk.end = next + counts[s];
    chunk.has_embedding = s == 0;
    chunk.has_head = s == stages - 1;
    next = chunk.end;
    result.push_back(chunk);
  }
  return result;
}

std::vector<LayerChunk> chunks_of_rank(const std::vector<LayerChunk>& stages, int pp, int rank) {
  std::vector<LayerChunk> result;
  for (size_t s = static_cast<size_t>(rank); s < stages.size(); s += static_cast<size_t>(pp))
    result.push_back(stages[s]);
  return result;
}

LayerChunk whole_model(int64_t num_layers) { return {0, num_layers, true, true}; }

}  // namespace dst

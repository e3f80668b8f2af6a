// Which decoder layers each pipeline stage holds. With pp ranks and v virtual stages per rank
// there are S = pp * v virtual stages; virtual stage s lives on rank s % pp as its chunk s / pp.
// Layers are split in order, balanced by default (earlier stages take the remainder) or by
// explicit per-stage counts from the recipe. The embedding belongs to virtual stage 0, the final
// norm and LM head to stage S - 1. Torch-free.
#pragma once

#include <cstdint>
#include <vector>

namespace dst {

// A contiguous run of decoder layers [begin, end) plus the ends of the model it carries.
struct LayerChunk {
  int64_t begin = 0;
  int64_t end = 0;
  bool has_embedding = false;
  bool has_head = false;  // final norm + LM head (+ loss)
  bool operator==(const LayerChunk& o) const {
    return begin == o.begin && end == o.end && has_embedding == o.has_embedding &&
           has_head == o.has_head;
  }
};

// One chunk per virtual stage, in pipeline order. `layers_per_stage` empty: balanced; otherwise
// S non-negative counts summing to num_layers (ConfigError naming parallel.layers_per_stage).
// ConfigError (parallel.pp / parallel.virtual_stages) when there are fewer layers than stages or
// more than 65536 stages.
std::vector<LayerChunk> partition_layers(int64_t num_layers, int pp, int virtual_stages,
                                         const std::vector<int64_t>& layers_per_stage = {});

// The chunks pipeline rank `rank` holds, in its local chunk order (virtual stages rank,
// rank + pp, ...).
std::vector<LayerChunk> chunks_of_rank(const std::vector<LayerChunk>& stages, int pp, int rank);

// The whole model as one chunk (no pipeline parallelism).
LayerChunk whole_model(int64_t num_layers);

}  // namespace dst

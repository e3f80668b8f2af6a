// Where a stored checkpoint piece and a wanted range of the same tensor overlap, as runs of
// elements contiguous in both (checkpoint/checkpoint_manifest.h: PieceLocation). The reader uses
// it to read only the hyperslabs it needs, so no rank ever builds a whole tensor to take its
// slice of it. Torch-free.
#pragma once

#include <cstdint>
#include <vector>

#include "deepseek_train/checkpoint/checkpoint_manifest.h"

namespace dst {

// `length` elements at `wanted_offset` of the wanted range (counted from want.begin) that sit at
// `piece_offset` of the piece (counted from piece.begin).
struct OverlapRun {
  int64_t wanted_offset = 0;
  int64_t piece_offset = 0;
  int64_t length = 0;
  bool operator==(const OverlapRun& other) const {
    return wanted_offset == other.wanted_offset && piece_offset == other.piece_offset &&
           length == other.length;
  }
};

// The overlap of `piece` with `want`, both located in a tensor of global shape `shape` whose
// blocks use the (padded) extents `extent` (>= shape; blocks take the extent on every dimension
// but their split one). Positions past `shape` (padding) are never part of a run. Runs come in
// increasing order of both offsets, adjacent runs merged. Throws CheckpointError when either
// location does not fit its block.
std::vector<OverlapRun> overlap_runs(const PieceLocation& want, const PieceLocation& piece,
                                     const std::vector<int64_t>& shape,
                                     const std::vector<int64_t>& extent);

// The elements of `want` that lie inside `shape` (not padding): overlap_runs of want with itself.
std::vector<OverlapRun> unpadded_runs(const PieceLocation& want, const std::vector<int64_t>& shape,
                                      const std::vector<int64_t>& extent);

// The number of elements of the block a location describes.
int64_t block_elements(const PieceLocation& location, const std::vector<int64_t>& extent);

}  // namespace dst

#include "deepseek_train/checkpoint/piece_geometry.h"

#include <algorithm>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

// A holder's block in global coordinates: its extent and origin on every dimension.
struct Block {
  std::vector<int64_t> extent;
  std::vector<int64_t> origin;
};

Block block_of(const PieceLocation& location, const std::vector<int64_t>& extent) {
  Block block{extent, std::vector<int64_t>(extent.size(), 0)};
  if (location.split_dim >= 0) {
    block.extent[location.split_dim] = location.block_length;
    block.origin[location.split_dim] = location.block_start;
  }
  return block;
}

int64_t product(const std::vector<int64_t>& values, size_t from, size_t to) {
  int64_t result = 1;
  for (size_t d = from; d < to; ++d) result *= values[d];
  return result;
}

// Element strides of dimensions 0..last of a block whose dimensions past `last` hold `inner`
// elements per index of `last`.
std::vector<int64_t> leading_strides(const Block& block, int last, int64_t inner) {
  std::vector<int64_t> strides(last + 1, inner);
  for (int d = last - 1; d >= 0; --d) strides[d] = strides[d + 1] * block.extent[d + 1];
  return strides;
}

int64_t flat_index(const std::vector<int64_t>& global, const Block& block,
                   const std::vector<int64_t>& strides) {
  int64_t flat = 0;
  for (size_t d = 0; d < strides.size(); ++d) flat += (global[d] - block.origin[d]) * strides[d];
  return flat;
}

void append_run(std::vector<OverlapRun>& runs, OverlapRun run) {
  if (!runs.empty()) {
    OverlapRun& last = runs.back();
    if (last.wanted_offset + last.length == run.wanted_offset &&
        last.piece_offset + last.length == run.piece_offset) {
      last.length += run.length;
      return;
    }
  }
  runs.push_back(run);
}

}  // namespace

int64_t block_elements(const PieceLocation& location, const std::vector<int64_t>& extent) {
  const Block block = block_of(location, extent);
  return product(block.extent, 0, block.extent.size());
}

// Dimensions past `last` (the deepest split or padded one) are whole in both blocks, so every
// index tuple of dimensions 0..last-1 gives one run: dimension `last`'s common range times the
// inner elements, contiguous in both blocks.
std::vector<OverlapRun> overlap_runs(const PieceLocation& want, const PieceLocation& piece,
                                     const std::vector<int64_t>& shape,
                                     const std::vector<int64_t>& extent) {
  DST_ASSERT(shape.size() == extent.size(), "overlap_runs: shape and extent ranks differ");
  DST_ASSERT(want.begin >= 0 && want.begin <= want.end && want.end <= block_elements(want, extent),
             "overlap_runs: the wanted range does not fit its block");
  DST_ASSERT(
      0 <= piece.begin && piece.begin <= piece.end && piece.end <= block_elements(piece, extent),
      "overlap_runs: the piece does not fit its block");
  const int dims = static_cast<int>(extent.size());
  int last = std::max(want.split_dim, piece.split_dim);
  for (int d = 0; d < dims; ++d)
    if (extent[d] > shape[d]) last = std::max(last, d);
  const int64_t inner = product(extent, last + 1, dims);
  const Block wanted = block_of(want, extent), held = block_of(piece, extent);
  std::vector<int64_t> lo(last + 1), hi(last + 1);
  for (int d = 0; d <= last; ++d) {
    lo[d] = std::max(wanted.origin[d], held.origin[d]);
    hi[d] =
        std::min({wanted.origin[d] + wanted.extent[d], held.origin[d] + held.extent[d], shape[d]});
    if (lo[d] >= hi[d]) return {};
  }
  const std::vector<int64_t> wanted_strides = leading_strides(wanted, last, inner);
  const std::vector<int64_t> held_strides = leading_strides(held, last, inner);
  const int64_t run_length = last >= 0 ? (hi[last] - lo[last]) * inner : inner;
  std::vector<OverlapRun> runs;
  std::vector<int64_t> index = lo;  // an odometer over dimensions 0..last-1; `last` stays at lo
  for (;;) {
    const int64_t w = flat_index(index, wanted, wanted_strides);
    const int64_t p = flat_index(index, held, held_strides);
    if (w >= want.end || p >= piece.end) break;  // both grow along the odometer
    const int64_t from = std::max({int64_t{0}, want.begin - w, piece.begin - p});
    const int64_t to = std::min({run_length, want.end - w, piece.end - p});
    if (from < to) append_run(runs, {w + from - want.begin, p + from - piece.begin, to - from});
    int d = last - 1;
    for (; d >= 0; --d) {
      if (++index[d] < hi[d]) break;
      index[d] = lo[d];
    }
    if (d < 0) break;
  }
  return runs;
}

std::vector<OverlapRun> unpadded_runs(const PieceLocation& want, const std::vector<int64_t>& shape,
                                      const std::vector<int64_t>& extent) {
  return overlap_runs(want, want, shape, extent);
}

}  // namespace dst

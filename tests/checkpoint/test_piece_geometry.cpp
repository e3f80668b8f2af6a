// overlap_runs against an element-by-element reference on random tensors, blocks and ranges.
#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <vector>

#include "deepseek_train/checkpoint/piece_geometry.h"

using namespace dst;

namespace {

// Global coordinates of flat element `flat` of a location's block (row-major over the block).
std::vector<int64_t> global_index(const PieceLocation& l, const std::vector<int64_t>& extent,
                                  int64_t flat) {
  std::vector<int64_t> block = extent;
  if (l.split_dim >= 0) block[l.split_dim] = l.block_length;
  std::vector<int64_t> index(extent.size());
  for (int d = static_cast<int>(extent.size()) - 1; d >= 0; --d) {
    index[d] = flat % block[d];
    flat /= block[d];
  }
  if (l.split_dim >= 0) index[l.split_dim] += l.block_start;
  return index;
}

bool inside(const std::vector<int64_t>& index, const std::vector<int64_t>& shape) {
  for (size_t d = 0; d < shape.size(); ++d)
    if (index[d] >= shape[d]) return false;
  return true;
}

// wanted offset -> piece offset for every element both hold, by brute force.
std::map<int64_t, int64_t> reference_overlap(const PieceLocation& want, const PieceLocation& piece,
                                             const std::vector<int64_t>& shape,
                                             const std::vector<int64_t>& extent) {
  std::map<std::vector<int64_t>, int64_t> wanted;
  for (int64_t i = want.begin; i < want.end; ++i)
    wanted[global_index(want, extent, i)] = i - want.begin;
  std::map<int64_t, int64_t> result;
  for (int64_t i = piece.begin; i < piece.end; ++i) {
    const std::vector<int64_t> index = global_index(piece, extent, i);
    auto it = wanted.find(index);
    if (it != wanted.end() && inside(index, shape)) result[it->second] = i - piece.begin;
  }
  return result;
}

std::map<int64_t, int64_t> expand(const std::vector<OverlapRun>& runs) {
  std::map<int64_t, int64_t> result;
  for (const OverlapRun& run : runs)
    for (int64_t i = 0; i < run.length; ++i) result[run.wanted_offset + i] = run.piece_offset + i;
  return result;
}

PieceLocation random_location(std::mt19937& rng, const std::vector<int64_t>& extent) {
  PieceLocation l;
  const int dims = static_cast<int>(extent.size());
  l.split_dim = std::uniform_int_distribution<int>(-1, dims - 1)(rng);
  if (l.split_dim >= 0) {
    const int64_t size = extent[l.split_dim];
    l.block_start = std::uniform_int_distribution<int64_t>(0, size - 1)(rng);
    l.block_length = std::uniform_int_distribution<int64_t>(1, size - l.block_start)(rng);
  }
  int64_t elements = 1;
  for (int d = 0; d < dims; ++d) elements *= d == l.split_dim ? l.block_length : extent[d];
  l.begin = std::uniform_int_distribution<int64_t>(0, elements)(rng);
  l.end = std::uniform_int_distribution<int64_t>(l.begin, elements)(rng);
  return l;
}

}  // namespace

TEST_CASE("piece geometry: runs equal an element-by-element mapping", "[checkpoint]") {
  std::mt19937 rng(7);
  int overlapping = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int dims = std::uniform_int_distribution<int>(0, 3)(rng);
    std::vector<int64_t> shape(dims), extent(dims);
    for (int d = 0; d < dims; ++d) {
      shape[d] = std::uniform_int_distribution<int64_t>(1, 7)(rng);
      // Padding on one dimension, as vocabulary rows are padded.
      extent[d] = shape[d] + (trial % 3 == 0 && d == 0 ? 2 : 0);
    }
    const PieceLocation want = random_location(rng, extent);
    const PieceLocation piece = random_location(rng, extent);
    const std::vector<OverlapRun> runs = overlap_runs(want, piece, shape, extent);
    const auto expected = reference_overlap(want, piece, shape, extent);
    INFO("trial " << trial);
    REQUIRE(expand(runs) == expected);
    overlapping += expected.empty() ? 0 : 1;
    for (size_t r = 1; r < runs.size(); ++r) {  // ordered, disjoint, merged
      CHECK(runs[r].wanted_offset > runs[r - 1].wanted_offset + runs[r - 1].length - 1);
      CHECK(runs[r].piece_offset >= runs[r - 1].piece_offset + runs[r - 1].length);
      CHECK_FALSE((runs[r].wanted_offset == runs[r - 1].wanted_offset + runs[r - 1].length &&
                   runs[r].piece_offset == runs[r - 1].piece_offset + runs[r - 1].length));
    }
    const auto unpadded = expand(unpadded_runs(want, shape, extent));
    int64_t expected_unpadded = 0;
    for (int64_t i = want.begin; i < want.end; ++i)
      expected_unpadded += inside(global_index(want, extent, i), shape) ? 1 : 0;
    CHECK(static_cast<int64_t>(unpadded.size()) == expected_unpadded);
  }
  CHECK(overlapping > 300);  // the random cases do exercise overlaps
}

TEST_CASE("piece geometry: column blocks of a row-major matrix are one run per row",
          "[checkpoint]") {
  // A 4 x 6 matrix saved whole; the wanted block is columns [2, 5) (tensor parallel on dim 1).
  PieceLocation whole{-1, 0, 0, 0, 24};
  PieceLocation columns{1, 2, 3, 0, 12};
  const std::vector<int64_t> shape{4, 6};
  const auto runs = overlap_runs(columns, whole, shape, shape);
  REQUIRE(runs.size() == 4);
  for (int row = 0; row < 4; ++row) CHECK(runs[row] == OverlapRun{row * 3, row * 6 + 2, 3});
  // Rows [1, 3) saved as their own block read back into a whole-tensor range as one run.
  PieceLocation rows{0, 1, 2, 0, 12};
  CHECK(overlap_runs(whole, rows, shape, shape) == std::vector<OverlapRun>{{6, 0, 12}});
}

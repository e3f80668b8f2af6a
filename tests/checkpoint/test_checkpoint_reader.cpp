// CheckpointReader::read against the tensors a single-process writer stored as pieces of several
// holders: every wanted block and range of a reshard, read in windows of any size, equals the
// original; reading a slice allocates about the slice, never the whole tensor.
#include <ATen/ATen.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "deepseek_train/checkpoint/sharded_checkpoint.h"
#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/core/error.h"
#include "support/held_memory.h"

using namespace dst;

namespace {

namespace fs = std::filesystem;

struct ScratchDir {
  fs::path path = fs::temp_directory_path() / ("dst_reader_test_" + std::to_string(::getpid()));
  ScratchDir() { fs::create_directories(path); }
  ~ScratchDir() { fs::remove_all(path); }
};

// The piece of `full` (2-D, rows split on dim 0 or columns on dim 1, or whole) at `location`.
StatePiece piece_of(const std::string& name, const at::Tensor& full, PieceLocation location) {
  at::Tensor block = location.split_dim >= 0 ? full.narrow(location.split_dim, location.block_start,
                                                           location.block_length)
                                             : full;
  StatePiece piece;
  piece.tensor = name;
  piece.kind = "master";
  piece.global_shape = full.sizes().vec();
  piece.location = location;
  piece.data = block.contiguous().view({-1}).slice(0, location.begin, location.end).clone();
  return piece;
}

// Saves `pieces` as one checkpoint of a single process and returns its directory.
std::string save(const fs::path& root, std::vector<StatePiece> pieces,
                 std::optional<EncryptionKey> key = std::nullopt) {
  CheckpointWriter writer(comm::make_local_communicator(), std::move(key));
  CheckpointInfo info;
  info.step = 1;
  return writer.save(root.string(), info, std::move(pieces), /*async=*/false, 0);
}

at::Tensor wanted_of(const at::Tensor& full, const PieceLocation& want) {
  at::Tensor block =
      want.split_dim >= 0 ? full.narrow(want.split_dim, want.block_start, want.block_length) : full;
  return block.contiguous().view({-1}).slice(0, want.begin, want.end);
}

}  // namespace

TEST_CASE("checkpoint reader: any block and range of a tensor stored in pieces", "[checkpoint]") {
  ScratchDir scratch;
  const at::Tensor full = at::arange(64 * 48, at::kFloat).view({64, 48});
  // Two row blocks, the first as two ZeRO shards; a second tensor stored whole.
  std::vector<StatePiece> pieces{
      piece_of("w", full, {0, 0, 32, 0, 700}), piece_of("w", full, {0, 0, 32, 700, 1536}),
      piece_of("w", full, {0, 32, 32, 0, 1536}), piece_of("v", full, {-1, 0, 0, 0, 3072})};
  const std::string directory = save(scratch.path, std::move(pieces));
  const std::vector<PieceLocation> wanted{{-1, 0, 0, 0, 3072},  {-1, 0, 0, 1000, 2100},
                                          {0, 16, 40, 0, 1920}, {0, 8, 16, 100, 700},
                                          {1, 16, 24, 0, 1536}, {1, 40, 8, 33, 400}};
  for (const int64_t window : {int64_t{64} << 20, int64_t{256}, int64_t{4}}) {
    CheckpointReader reader(directory, std::nullopt);
    reader.set_read_window_bytes(window);
    for (const std::string name : {"w", "v"})
      for (const PieceLocation& want : wanted) {
        INFO(name << " split " << want.split_dim << " block " << want.block_start << "+"
                  << want.block_length << " [" << want.begin << ", " << want.end << ") window "
                  << window);
        CHECK(at::equal(reader.read(name, "master", want), wanted_of(full, want)));
      }
    CHECK(at::equal(reader.read_full("w", "master"), full));
  }
}

TEST_CASE("checkpoint reader: padded blocks read zeros past the global shape; holes are errors",
          "[checkpoint]") {
  ScratchDir scratch;
  const at::Tensor full = at::randn({10, 4});
  // Rows padded to 12: the second holder's block [6, 12) holds two rows of padding.
  at::Tensor padded = at::cat({full, at::zeros({2, 4})});
  StatePiece second = piece_of("emb", padded, {0, 6, 6, 0, 24});
  second.global_shape = {10, 4};
  StatePiece first = piece_of("emb", padded, {0, 0, 6, 0, 24});
  first.global_shape = {10, 4};
  StatePiece partial = piece_of("half", full, {0, 0, 5, 0, 20});
  const std::string directory = save(scratch.path, {first, second, partial});
  CheckpointReader reader(directory, std::nullopt);
  CHECK(at::equal(reader.read_full("emb", "master"), full));
  CHECK(at::equal(reader.read("emb", "master", {0, 8, 4, 0, 16}),
                  at::cat({full.slice(0, 8, 10).reshape({-1}), at::zeros({8})})));
  CHECK(
      at::equal(reader.read("half", "master", {0, 0, 5, 0, 20}), full.slice(0, 0, 5).reshape(-1)));
  CHECK_THROWS_WITH(reader.read("half", "master", {0, 4, 2, 0, 8}),
                    Catch::Contains("part of the master of tensor 'half' is held by no file"));
}

TEST_CASE("checkpoint reader: reading a slice allocates the slice, not the tensor",
          "[checkpoint]") {
  ScratchDir scratch;
  const at::Tensor full = at::randn({1024, 1024});  // 4 MiB, saved whole by one holder
  const std::string directory = save(scratch.path, {piece_of("w", full, {-1, 0, 0, 0, 1 << 20})});
  const int64_t quarter = int64_t{256} * 1024 * 4;  // bytes of a quarter of the tensor
  CheckpointReader reader(directory, std::nullopt);
  reader.set_read_window_bytes(quarter / 4);
  for (const PieceLocation& want : {PieceLocation{0, 256, 256, 0, 1 << 18},     // rows
                                    PieceLocation{1, 512, 256, 0, 1 << 18}}) {  // columns
    at::Tensor slice;
    testing::AllocationCounter counter;
    slice = reader.read("w", "master", want);
    INFO("split " << want.split_dim << ": peak " << counter.peak_bytes() << " bytes");
    // The slice, its coverage mask (1 byte an element) and one read window.
    CHECK(counter.peak_bytes() <= quarter + quarter / 4 + quarter / 4 + 4096);
    CHECK(at::equal(slice, wanted_of(full, want)));
  }
}

TEST_CASE("checkpoint reader: encrypted pieces read back in any block", "[checkpoint]") {
  ScratchDir scratch;
  const EncryptionKey key = EncryptionKey::from_bytes(std::string(32, '\x5a'));
  const at::Tensor full = at::randn({12, 8});
  const std::string directory =
      save(scratch.path,
           {piece_of("w", full, {0, 0, 6, 0, 48}), piece_of("w", full, {0, 6, 6, 0, 48})}, key);
  CheckpointReader reader(directory, key);
  CHECK(reader.encrypted());
  const PieceLocation columns{1, 2, 4, 5, 40};
  CHECK(at::equal(reader.read("w", "master", columns), wanted_of(full, columns)));
}

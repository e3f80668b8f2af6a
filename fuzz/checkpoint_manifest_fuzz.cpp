// Fuzzes dst::parse_checkpoint_manifest, then checks what CheckpointReader relies on: every
// piece names a listed file, has -1 <= split_dim < rank and 0 <= begin <= end, and every dtype
// is known.
#include <cstddef>
#include <cstdint>
#include <string>

#include "deepseek_train/checkpoint/checkpoint_manifest.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  dst::CheckpointManifest manifest;
  if (!dst_fuzz::expect_only_dst_errors(
          [&] { manifest = dst::parse_checkpoint_manifest(text, "fuzz/manifest.json"); }))
    return 0;

  dst_fuzz::check(manifest.format == dst::kCheckpointFormat, "format");
  for (const auto& [file, entry] : manifest.files)
    dst_fuzz::check(!file.empty() && file[0] != '/' && entry.bytes >= 0, "file " + file);
  for (const auto& [name, tensor] : manifest.tensors) {
    for (const int64_t dim : tensor.shape) dst_fuzz::check(dim >= 0, "negative dim in " + name);
    for (const auto& [kind, state] : tensor.states) {
      dst_fuzz::check(dst::is_checkpoint_dtype_name(state.dtype), "dtype of " + name);
      for (const dst::ManifestPiece& piece : state.pieces) {
        const dst::PieceLocation& l = piece.location;
        dst_fuzz::check(manifest.files.count(piece.file) == 1, "unlisted file " + piece.file);
        dst_fuzz::check(l.split_dim >= -1 && l.split_dim < static_cast<int>(tensor.shape.size()),
                        "split_dim of " + name);
        dst_fuzz::check(l.begin >= 0 && l.begin <= l.end, "begin/end of " + name);
        dst_fuzz::check(l.block_start >= 0 && l.block_length >= 0, "block of " + name);
      }
    }
  }
  return 0;
}

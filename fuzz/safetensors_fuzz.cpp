// Fuzzes dst::parse_safetensors_header on whole-file bytes, then checks the invariants the reader
// relies on: entries sorted and tiling the data section exactly, each one's size matching its
// shape and dtype.
#include <cstddef>
#include <cstdint>
#include <string>

#include "deepseek_train/checkpoint/safetensors.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  dst::SafetensorsHeader header;
  if (!dst_fuzz::expect_only_dst_errors(
          [&] { header = dst::parse_safetensors_header(bytes, "fuzz.safetensors"); }))
    return 0;

  dst_fuzz::check(header.file_size == size, "file_size");
  dst_fuzz::check(header.data_start >= 8 && header.data_start <= size, "data_start");
  uint64_t expected = 0;
  for (const dst::SafetensorsEntry& entry : header.entries) {
    dst_fuzz::check(entry.begin == expected, "entries do not tile the data section");
    dst_fuzz::check(entry.begin <= entry.end, "begin > end");
    dst_fuzz::check(entry.numel() * dst::element_size(entry.dtype) == entry.nbytes(),
                    "size does not match shape and dtype: " + entry.name);
    for (const int64_t dim : entry.shape) dst_fuzz::check(dim >= 0, "negative dim");
    dst_fuzz::check(std::string(dst::to_string(entry.dtype)).size() > 0, "dtype name");
    expected = entry.end;
  }
  dst_fuzz::check(header.data_start + expected == size, "entries do not end at the file's end");
  return 0;
}

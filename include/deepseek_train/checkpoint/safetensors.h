// Torch-free reader and writer of Hugging Face safetensors files (and their sharded index), so
// weights can be exchanged with the Hugging Face ecosystem. Reading validates the header strictly
// and reads only the byte spans asked for; writing is atomic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dst {

enum class SafetensorsDtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2 };

// Bytes per element (1 for BOOL and the FP8 types).
std::size_t element_size(SafetensorsDtype dtype);

// The header spelling: "F32", "BF16", "F8_E4M3", ...
const char* to_string(SafetensorsDtype dtype);

// Parses a header dtype string. Throws CheckpointError naming `path` and `tensor` when unknown.
SafetensorsDtype safetensors_dtype_from_string(const std::string& name, const std::string& path,
                                               const std::string& tensor);

// One tensor of a safetensors header.
struct SafetensorsEntry {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offset relative to the data section
  uint64_t end = 0;
  // Product of the shape (1 for a 0-d tensor). Validated against overflow when the file is opened.
  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// The parsed, validated header of one safetensors file (see parse_safetensors_header).
struct SafetensorsHeader {
  uint64_t file_size = 0;   // size of the whole file
  uint64_t data_start = 0;  // absolute file offset of the data section: 8 + N
  // All tensors, sorted by begin (then by end; stable among zero-byte tensors at one offset).
  std::vector<SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Parses and validates a safetensors header from memory, as SafetensorsFile does (the rules are
// listed there): `bytes` is the whole file. Every failure throws a one-line CheckpointError
// naming `source` and the tensor or offset. Torch-free, no I/O.
SafetensorsHeader parse_safetensors_header(const std::string& bytes, const std::string& source,
                                           uint64_t max_header_bytes = 100ull << 20);
// Same, when `bytes` is only the beginning of a file of `file_size` bytes: it must hold the
// 8-byte length and the N-byte header (or the whole file, when shorter); the data section is
// checked against `file_size` and never read.
SafetensorsHeader parse_safetensors_header(const std::string& bytes, uint64_t file_size,
                                           const std::string& source,
                                           uint64_t max_header_bytes = 100ull << 20);

// The parsed, validated header of one safetensors file. Tensor data is read on demand.
class SafetensorsFile {
 public:
  // Opens and validates `path`: the file has at least 8 bytes; the header length N is at most
  // `max_header_bytes` and at most file size - 8; the header is a JSON object without duplicate
  // keys; every entry is an object with exactly "dtype" (a known dtype), "shape" (non-negative
  // integers) and "data_offsets" ([begin, end], begin <= end) with numel * element_size ==
  // end - begin; the entries, sorted by begin, tile the data section exactly (first at 0, no gap,
  // no overlap, last ends at file size - 8 - N); "__metadata__", if present, maps strings to
  // strings. Every failure throws a one-line CheckpointError "<path>: <what> (tensor '<name>' |
  // offset <k>)"; "offset" is a file offset, "data offset" one relative to the data section.
  // Reads only the first 8 + N bytes; the validation is parse_safetensors_header's.
  explicit SafetensorsFile(std::string path, uint64_t max_header_bytes = 100ull << 20);

  const std::string& path() const { return path_; }
  // All tensors, sorted by begin (then by name among zero-byte tensors at the same offset).
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // nullptr when absent.
  const SafetensorsEntry* find(const std::string& name) const;
  // Throws CheckpointError naming the file and the tensor when absent.
  const SafetensorsEntry& at(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Absolute file offset of the data section: 8 + N.
  uint64_t data_start() const { return data_start_; }
  // Size of the file when it was opened.
  uint64_t file_size() const { return file_size_; }

  // Reads bytes [byte_begin, byte_end) of tensor `name` (relative to the tensor's own start) into
  // `out`, reading only that span from disk. Throws CheckpointError naming the file and tensor
  // for an unknown tensor, a span outside the tensor, or a failed/short read.
  void read(const std::string& name, void* out, uint64_t byte_begin, uint64_t byte_end) const;
  // Reads the whole tensor (nbytes() bytes).
  void read(const std::string& name, void* out) const;

 private:
  std::string path_;
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::size_t> index_;  // name -> position in entries_
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: `data` points to numel * element_size bytes (may be null when that is 0).
struct SafetensorsTensorView {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Writes `path` atomically: tensors laid out contiguously in the given order, the JSON header
// padded with spaces so that 8 + N is a multiple of 8, `metadata` as "__metadata__" (omitted when
// empty). Throws CheckpointError for duplicate, empty or reserved ("__metadata__") names, negative
// dims, null data or non-UTF-8 strings; IoError when the file cannot be written.
void write_safetensors(const std::string& path, const std::vector<SafetensorsTensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Reads a sharded checkpoint index (`model.safetensors.index.json`:
// {"metadata": {...}, "weight_map": {"tensor": "file.safetensors", ...}}) and returns tensor
// name -> file name (relative to the index's folder). Throws CheckpointError naming the index file
// and the offending key (or byte offset for malformed JSON).
std::map<std::string, std::string> read_safetensors_index(const std::string& index_path);

// Writes an index atomically: {"metadata": {"total_size": total_size}, "weight_map": weight_map}.
void write_safetensors_index(const std::string& index_path,
                             const std::map<std::string, std::string>& weight_map,
                             uint64_t total_size);

// The safetensors files of a Hugging Face model folder: `<dir>/model.safetensors` if present,
// else the distinct files named by `<dir>/model.safetensors.index.json` (sorted, joined with the
// folder). Throws CheckpointError naming the folder when neither exists.
std::vector<std::string> safetensors_files_in(const std::string& model_dir);

}  // namespace dst

#include "deepseek_train/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"

namespace dst {
namespace {

using nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  std::size_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::F64, "F64", 8},         {SafetensorsDtype::F32, "F32", 4},
    {SafetensorsDtype::F16, "F16", 2},         {SafetensorsDtype::BF16, "BF16", 2},
    {SafetensorsDtype::I64, "I64", 8},         {SafetensorsDtype::I32, "I32", 4},
    {SafetensorsDtype::I16, "I16", 2},         {SafetensorsDtype::I8, "I8", 1},
    {SafetensorsDtype::U8, "U8", 1},           {SafetensorsDtype::BOOL, "BOOL", 1},
    {SafetensorsDtype::F8_E4M3, "F8_E4M3", 1}, {SafetensorsDtype::F8_E5M2, "F8_E5M2", 1},
};

const DtypeInfo& info_of(SafetensorsDtype dtype) {
  for (const auto& info : kDtypes)
    if (info.dtype == dtype) return info;
  DST_THROW(InternalError, "unknown SafetensorsDtype " << static_cast<int>(dtype));
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

// Product of `shape` times `element_bytes`; false on a negative dim or uint64 overflow.
bool checked_nbytes(const std::vector<int64_t>& shape, std::size_t element_bytes, uint64_t* numel,
                    uint64_t* nbytes) {
  uint64_t product = 1;
  for (const int64_t dim : shape) {
    if (dim < 0 || __builtin_mul_overflow(product, static_cast<uint64_t>(dim), &product))
      return false;
  }
  *numel = product;
  return !__builtin_mul_overflow(product, static_cast<uint64_t>(element_bytes), nbytes);
}

// A duplicate object key found while parsing: the key and the top-level key it sits under.
struct DuplicateKey {
  bool found = false;
  std::string key;
  std::string top_level_key;
};

// Deepest JSON nesting accepted (valid headers and indexes nest 3 levels): deeper documents
// would overflow the stack in nlohmann's recursive dump() and copy.
constexpr int kMaxJsonDepth = 64;

// Parses `text` as JSON without comments, recording the first duplicate key at any depth
// (nlohmann's DOM silently keeps the last one). Parse errors are rethrown as CheckpointError
// naming `path` and the file offset (`base_offset` + position in `text`).
json parse_json_strictly(std::string_view text, const std::string& path, uint64_t base_offset,
                         DuplicateKey* duplicate) {
  struct Frame {
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<Frame> frames;
  const json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) {
      DST_CHECK(depth < kMaxJsonDepth, CheckpointError,
                path << ": JSON nested deeper than " << kMaxJsonDepth << " levels (offset "
                     << base_offset << ")");
    }
    switch (event) {
      case json::parse_event_t::object_start:
        frames.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!frames.empty()) frames.pop_back();
        break;
      case json::parse_event_t::key:
        if (!frames.empty() && parsed.is_string()) {
          const std::string& key = parsed.get_ref<const std::string&>();
          if (!frames.back().keys.insert(key).second && !duplicate->found) {
            duplicate->found = true;
            duplicate->key = key;
            duplicate->top_level_key = frames.size() == 1 ? key : frames.front().last_key;
          }
          frames.back().last_key = key;
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const json::parse_error& e) {
    const uint64_t position = e.byte > 0 ? e.byte - 1 : 0;
    DST_THROW(CheckpointError, path << ": header is not valid JSON: " << printable(e.what())
                                    << " (offset " << base_offset + position << ")");
  } catch (const json::exception& e) {
    // A number too large for a double (out_of_range.406) carries no position.
    DST_THROW(CheckpointError, path << ": header is not valid JSON: " << printable(e.what())
                                    << " (offset " << base_offset << ")");
  }
}

// Reads exactly `length` bytes at `offset`; returns the number of bytes read (short at EOF) or
// -1 with errno set on an I/O error.
int64_t pread_fully(int fd, void* out, uint64_t length, uint64_t offset) {
  auto* cursor = static_cast<char*>(out);
  uint64_t done = 0;
  while (done < length) {
    const uint64_t chunk = std::min<uint64_t>(length - done, 1ull << 30);
    const ssize_t got = ::pread(fd, cursor + done, chunk, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (got == 0) break;
    done += static_cast<uint64_t>(got);
  }
  return static_cast<int64_t>(done);
}

// Owns a read-only file descriptor.
class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    DST_CHECK(fd_ >= 0, CheckpointError,
              path << ": cannot open for reading: " << std::strerror(errno) << " (offset 0)");
  }
  ~ReadOnlyFile() { ::close(fd_); }
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

uint64_t read_le_u64(const unsigned char* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

// Parses one tensor entry of the header (everything but the layout checks).
SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const json& value,
                             uint64_t data_size) {
  const std::string tensor = printable(name);
  DST_CHECK(value.is_object(), CheckpointError,
            path << ": header entry is a JSON " << value.type_name()
                 << ", expected an object with dtype, shape and data_offsets (tensor '" << tensor
                 << "')");
  for (const auto& item : value.items()) {
    DST_CHECK(item.key() == "dtype" || item.key() == "shape" || item.key() == "data_offsets",
              CheckpointError,
              path << ": unexpected key '" << printable(item.key()) << "' in header entry (tensor '"
                   << tensor << "')");
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    DST_CHECK(value.contains(key), CheckpointError,
              path << ": header entry has no \"" << key << "\" (tensor '" << tensor << "')");
  }

  SafetensorsEntry entry;
  entry.name = name;
  const json& dtype = value["dtype"];
  DST_CHECK(dtype.is_string(), CheckpointError,
            path << ": \"dtype\" is a JSON " << dtype.type_name() << ", expected a string (tensor '"
                 << tensor << "')");
  entry.dtype = safetensors_dtype_from_string(dtype.get<std::string>(), path, name);

  const json& shape = value["shape"];
  DST_CHECK(shape.is_array(), CheckpointError,
            path << ": \"shape\" is a JSON " << shape.type_name() << ", expected an array (tensor '"
                 << tensor << "')");
  for (const json& dim : shape) {
    const bool valid =
        dim.is_number_unsigned() &&
        dim.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    DST_CHECK(valid, CheckpointError,
              path << ": \"shape\" " << printable(shape.dump())
                   << " must hold non-negative integers (tensor '" << tensor << "')");
    entry.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
  }

  const json& offsets = value["data_offsets"];
  const bool offsets_valid = offsets.is_array() && offsets.size() == 2 &&
                             offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned();
  DST_CHECK(offsets_valid, CheckpointError,
            path << ": \"data_offsets\" " << printable(offsets.dump())
                 << " must be [begin, end] of non-negative integers (tensor '" << tensor << "')");
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  DST_CHECK(entry.begin <= entry.end, CheckpointError,
            path << ": data_offsets [" << entry.begin << ", " << entry.end
                 << "] end before they begin (tensor '" << tensor << "', data offset "
                 << entry.begin << ")");

  uint64_t numel = 0;
  uint64_t nbytes = 0;
  const std::size_t element_bytes = element_size(entry.dtype);
  DST_CHECK(checked_nbytes(entry.shape, element_bytes, &numel, &nbytes), CheckpointError,
            path << ": shape " << shape_string(entry.shape) << " is too large (tensor '" << tensor
                 << "')");
  DST_CHECK(nbytes == entry.end - entry.begin, CheckpointError,
            path << ": shape " << shape_string(entry.shape) << " of " << to_string(entry.dtype)
                 << " needs " << numel << " * " << element_bytes << " = " << nbytes
                 << " bytes but data_offsets [" << entry.begin << ", " << entry.end << "] span "
                 << entry.end - entry.begin << " (tensor '" << tensor << "')");
  DST_CHECK(entry.end <= data_size, CheckpointError,
            path << ": data_offsets [" << entry.begin << ", " << entry.end
                 << "] run past the end of the file (data section has " << data_size
                 << " bytes; truncated?) (tensor '" << tensor << "', data offset " << entry.end
                 << ")");
  return entry;
}

std::string dump_strictly(const json& value, const std::string& path, int indent,
                          const char* what) {
  try {
    return value.dump(indent);
  } catch (const json::exception& e) {
    DST_THROW(CheckpointError,
              path << ": cannot encode " << what << " as JSON: " << printable(e.what()));
  }
}

}  // namespace

std::size_t element_size(SafetensorsDtype dtype) { return info_of(dtype).size; }

const char* to_string(SafetensorsDtype dtype) { return info_of(dtype).name; }

SafetensorsDtype safetensors_dtype_from_string(const std::string& name, const std::string& path,
                                               const std::string& tensor) {
  for (const auto& info : kDtypes)
    if (name == info.name) return info.dtype;
  DST_THROW(CheckpointError, path << ": unknown dtype '" << printable(name) << "' (tensor '"
                                  << printable(tensor) << "')");
}

uint64_t SafetensorsEntry::numel() const {
  uint64_t product = 1;
  for (const int64_t dim : shape) product *= static_cast<uint64_t>(dim);
  return product;
}

SafetensorsHeader parse_safetensors_header(const std::string& bytes, const std::string& source,
                                           uint64_t max_header_bytes) {
  return parse_safetensors_header(bytes, bytes.size(), source, max_header_bytes);
}

SafetensorsHeader parse_safetensors_header(const std::string& bytes, uint64_t file_size,
                                           const std::string& source, uint64_t max_header_bytes) {
  const std::string& path = source;
  SafetensorsHeader result;
  result.file_size = file_size;
  DST_CHECK(file_size >= 8, CheckpointError,
            path << ": file has " << file_size
                 << " bytes, too short for the 8-byte header length (offset 0)");
  DST_CHECK(bytes.size() >= 8, CheckpointError,
            path << ": cannot read the header length (offset 0)");
  const uint64_t header_length = read_le_u64(reinterpret_cast<const unsigned char*>(bytes.data()));
  DST_CHECK(header_length <= max_header_bytes, CheckpointError,
            path << ": header length " << header_length << " exceeds the limit of "
                 << max_header_bytes << " bytes (offset 0)");
  DST_CHECK(header_length <= file_size - 8, CheckpointError,
            path << ": header length " << header_length << " is larger than the " << file_size - 8
                 << " bytes after the length field (offset 0)");
  result.data_start = 8 + header_length;
  const uint64_t data_size = file_size - result.data_start;
  DST_CHECK(bytes.size() - 8 >= header_length, CheckpointError,
            path << ": short read of the header (offset 8)");
  const std::string_view text(bytes.data() + 8, header_length);

  DuplicateKey duplicate;
  const json header = parse_json_strictly(text, path, 8, &duplicate);
  DST_CHECK(
      header.is_object(), CheckpointError,
      path << ": header is a JSON " << header.type_name() << ", expected an object (offset 8)");
  DST_CHECK(!duplicate.found, CheckpointError,
            path << ": duplicate key '" << printable(duplicate.key) << "' in the header (tensor '"
                 << printable(duplicate.top_level_key) << "')");

  std::vector<SafetensorsEntry>& entries = result.entries;
  for (const auto& item : header.items()) {
    if (item.key() == kMetadataKey) {
      DST_CHECK(item.value().is_object(), CheckpointError,
                path << ": \"__metadata__\" is a JSON " << item.value().type_name()
                     << ", expected an object of strings (tensor '__metadata__')");
      for (const auto& field : item.value().items()) {
        DST_CHECK(field.value().is_string(), CheckpointError,
                  path << ": \"__metadata__\" value of key '" << printable(field.key())
                       << "' is a JSON " << field.value().type_name()
                       << ", expected a string (tensor '__metadata__')");
        result.metadata[field.key()] = field.value().get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, item.key(), item.value(), data_size));
  }

  std::stable_sort(entries.begin(), entries.end(),
                   [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  uint64_t expected = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const auto& entry : entries) {
    const std::string tensor = printable(entry.name);
    if (entry.begin < expected) {
      DST_THROW(CheckpointError, path << ": data_offsets [" << entry.begin << ", " << entry.end
                                      << "] overlap tensor '" << printable(previous->name)
                                      << "' ending at " << expected << " (tensor '" << tensor
                                      << "', data offset " << entry.begin << ")");
    }
    if (entry.begin > expected) {
      DST_THROW(CheckpointError, path << ": gap of " << entry.begin - expected
                                      << " unused bytes before data_offsets [" << entry.begin
                                      << ", " << entry.end << "] (tensor '" << tensor
                                      << "', data offset " << expected << ")");
    }
    expected = entry.end;
    previous = &entry;
  }
  DST_CHECK(expected == data_size, CheckpointError,
            path << ": data section has " << data_size << " bytes but the tensors end at "
                 << expected << " (" << data_size - expected << " trailing bytes; data offset "
                 << expected << ")");
  return result;
}

SafetensorsFile::SafetensorsFile(std::string path, uint64_t max_header_bytes)
    : path_(std::move(path)) {
  const ReadOnlyFile file(path_);
  struct stat info {};
  DST_CHECK(::fstat(file.fd(), &info) == 0, CheckpointError,
            path_ << ": cannot stat: " << std::strerror(errno) << " (offset 0)");
  DST_CHECK(S_ISREG(info.st_mode), CheckpointError, path_ << ": not a regular file (offset 0)");
  const uint64_t file_size = static_cast<uint64_t>(info.st_size);

  // Reads the length field and, when the length is plausible, the header; short reads leave
  // `bytes` short and parse_safetensors_header reports them.
  std::string bytes;
  if (file_size >= 8) {
    bytes.resize(8);
    bytes.resize(
        static_cast<std::size_t>(std::max<int64_t>(0, pread_fully(file.fd(), bytes.data(), 8, 0))));
    if (bytes.size() == 8) {
      const uint64_t header_length =
          read_le_u64(reinterpret_cast<const unsigned char*>(bytes.data()));
      if (header_length <= max_header_bytes && header_length <= file_size - 8) {
        bytes.resize(8 + header_length);
        const int64_t got = pread_fully(file.fd(), bytes.data() + 8, header_length, 8);
        bytes.resize(8 + static_cast<std::size_t>(std::max<int64_t>(0, got)));
      }
    }
  }
  SafetensorsHeader header = parse_safetensors_header(bytes, file_size, path_, max_header_bytes);
  file_size_ = header.file_size;
  data_start_ = header.data_start;
  entries_ = std::move(header.entries);
  metadata_ = std::move(header.metadata);
  for (std::size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  const auto found = index_.find(name);
  return found == index_.end() ? nullptr : &entries_[found->second];
}

const SafetensorsEntry& SafetensorsFile::at(const std::string& name) const {
  const SafetensorsEntry* entry = find(name);
  DST_CHECK(entry != nullptr, CheckpointError,
            path_ << ": no such tensor (tensor '" << printable(name) << "')");
  return *entry;
}

void SafetensorsFile::read(const std::string& name, void* out, uint64_t byte_begin,
                           uint64_t byte_end) const {
  const SafetensorsEntry& entry = at(name);
  DST_CHECK(byte_begin <= byte_end && byte_end <= entry.nbytes(), CheckpointError,
            path_ << ": byte range [" << byte_begin << ", " << byte_end
                  << ") is outside the tensor's " << entry.nbytes() << " bytes (tensor '"
                  << printable(name) << "', data offset " << entry.begin + byte_begin << ")");
  const uint64_t length = byte_end - byte_begin;
  if (length == 0) return;
  DST_CHECK(out != nullptr, CheckpointError,
            path_ << ": null output buffer (tensor '" << printable(name) << "')");
  const ReadOnlyFile file(path_);
  const uint64_t offset = data_start_ + entry.begin + byte_begin;
  const int64_t got = pread_fully(file.fd(), out, length, offset);
  DST_CHECK(got >= 0, CheckpointError,
            path_ << ": read failed: " << std::strerror(errno) << " (tensor '" << printable(name)
                  << "', file offset " << offset << ")");
  DST_CHECK(static_cast<uint64_t>(got) == length, CheckpointError,
            path_ << ": short read, got " << got << " of " << length
                  << " bytes; file truncated? (tensor '" << printable(name) << "', file offset "
                  << offset << ")");
}

void SafetensorsFile::read(const std::string& name, void* out) const {
  read(name, out, 0, at(name).nbytes());
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsTensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json fields = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) fields[key] = value;
    header[kMetadataKey] = std::move(fields);
  }
  std::set<std::string> names;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const auto& tensor : tensors) {
    const std::string name = printable(tensor.name);
    DST_CHECK(!tensor.name.empty(), CheckpointError, path << ": empty tensor name (tensor '')");
    DST_CHECK(tensor.name != kMetadataKey, CheckpointError,
              path << ": tensor name is reserved (tensor '" << name << "')");
    DST_CHECK(names.insert(tensor.name).second, CheckpointError,
              path << ": duplicate tensor name (tensor '" << name << "')");
    uint64_t numel = 0;
    uint64_t nbytes = 0;
    DST_CHECK(checked_nbytes(tensor.shape, element_size(tensor.dtype), &numel, &nbytes),
              CheckpointError,
              path << ": shape " << shape_string(tensor.shape)
                   << " has a negative dim or is too large (tensor '" << name << "')");
    DST_CHECK(nbytes == 0 || tensor.data != nullptr, CheckpointError,
              path << ": null data for " << nbytes << " bytes (tensor '" << name << "')");
    uint64_t end = 0;
    DST_CHECK(!__builtin_add_overflow(offset, nbytes, &end), CheckpointError,
              path << ": data section too large (tensor '" << name << "')");
    header[tensor.name] = {{"dtype", to_string(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, end}}};
    sizes.push_back(nbytes);
    offset = end;
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    DST_THROW(CheckpointError, path << ": a tensor name or metadata string is not valid UTF-8: "
                                    << printable(e.what()) << " (offset 8)");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<unsigned char>(text.size() >> (8 * i));

  write_atomically(path, [&](const std::string& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    DST_CHECK(out.is_open(), IoError,
              "cannot create '" << temporary << "' (for '" << path << "', offset 0)");
    out.write(reinterpret_cast<const char*>(length_bytes), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (std::size_t i = 0; i < tensors.size() && out; ++i) {
      if (sizes[i] > 0)
        out.write(static_cast<const char*>(tensors[i].data),
                  static_cast<std::streamsize>(sizes[i]));
    }
    out.close();
    DST_CHECK(!out.fail(), IoError,
              "cannot write '" << temporary << "' (for '" << path << "', "
                               << 8 + text.size() + offset << " bytes)");
  });
}

std::map<std::string, std::string> read_safetensors_index(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  DST_CHECK(in.is_open(), CheckpointError, index_path << ": cannot open the index (offset 0)");
  std::ostringstream contents;
  contents << in.rdbuf();
  DST_CHECK(!in.bad(), CheckpointError, index_path << ": cannot read the index (offset 0)");

  DuplicateKey duplicate;
  const json index = parse_json_strictly(contents.str(), index_path, 0, &duplicate);
  DST_CHECK(
      index.is_object(), CheckpointError,
      index_path << ": index is a JSON " << index.type_name() << ", expected an object (offset 0)");
  DST_CHECK(!duplicate.found, CheckpointError,
            index_path << ": duplicate key '" << printable(duplicate.key) << "' (under key '"
                       << printable(duplicate.top_level_key) << "')");
  if (index.contains("metadata")) {
    DST_CHECK(index["metadata"].is_object(), CheckpointError,
              index_path << ": \"metadata\" is a JSON " << index["metadata"].type_name()
                         << ", expected an object (key 'metadata')");
  }
  DST_CHECK(index.contains("weight_map"), CheckpointError,
            index_path << ": index has no \"weight_map\" (key 'weight_map')");
  const json& weight_map = index["weight_map"];
  DST_CHECK(weight_map.is_object(), CheckpointError,
            index_path << ": \"weight_map\" is a JSON " << weight_map.type_name()
                       << ", expected an object (key 'weight_map')");

  std::map<std::string, std::string> result;
  for (const auto& item : weight_map.items()) {
    const std::string tensor = printable(item.key());
    DST_CHECK(item.value().is_string(), CheckpointError,
              index_path << ": weight_map value is a JSON " << item.value().type_name()
                         << ", expected a file name (tensor '" << tensor << "')");
    const std::string file = item.value().get<std::string>();
    const std::filesystem::path file_path(file);
    bool relative = !file.empty() && file_path.is_relative();
    for (const auto& part : file_path) relative = relative && part != "..";
    DST_CHECK(relative, CheckpointError,
              index_path << ": weight_map file '" << printable(file)
                         << "' must be a path inside the index's folder (tensor '" << tensor
                         << "')");
    result[item.key()] = file;
  }
  return result;
}

void write_safetensors_index(const std::string& index_path,
                             const std::map<std::string, std::string>& weight_map,
                             uint64_t total_size) {
  json index = json::object();
  index["metadata"] = {{"total_size", total_size}};
  index["weight_map"] = weight_map;
  write_file_atomically(index_path, dump_strictly(index, index_path, 2, "the index") + "\n");
}

std::vector<std::string> safetensors_files_in(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  std::error_code ec;
  if (std::filesystem::is_regular_file(dir / kSingleFile, ec))
    return {(dir / kSingleFile).string()};
  const std::filesystem::path index_path = dir / kIndexFile;
  DST_CHECK(std::filesystem::is_regular_file(index_path, ec), CheckpointError,
            model_dir << ": no " << kSingleFile << " or " << kIndexFile << " in the model folder");
  std::set<std::string> files;
  for (const auto& [tensor, file] : read_safetensors_index(index_path.string())) files.insert(file);
  std::vector<std::string> paths;
  for (const auto& file : files) paths.push_back((dir / file).string());
  return paths;
}

}  // namespace dst

#include "deepseek_train/checkpoint/gguf_writer.h"

#include <cstring>
#include <fstream>

#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"

namespace dst {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;
// GGUF metadata value types.
constexpr uint32_t kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7, kString = 8, kArray = 9;

template <typename T>
void append(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // GGUF is little-endian, as this library's targets
  out.append(bytes, sizeof(T));
}

void append_string(std::string& out, const std::string& value) {
  append<uint64_t>(out, value.size());
  out += value;
}

uint64_t aligned(uint64_t offset) { return (offset + kAlignment - 1) / kAlignment * kAlignment; }

}  // namespace

void GgufWriter::add_key(const std::string& key, uint32_t value_type) {
  append_string(metadata_, key);
  append<uint32_t>(metadata_, value_type);
  ++metadata_count_;
}

void GgufWriter::add_uint32(const std::string& key, uint32_t value) {
  add_key(key, kUint32);
  append(metadata_, value);
}

void GgufWriter::add_int32(const std::string& key, int32_t value) {
  add_key(key, kInt32);
  append(metadata_, value);
}

void GgufWriter::add_float32(const std::string& key, float value) {
  add_key(key, kFloat32);
  append(metadata_, value);
}

void GgufWriter::add_bool(const std::string& key, bool value) {
  add_key(key, kBool);
  append<uint8_t>(metadata_, value ? 1 : 0);
}

void GgufWriter::add_string(const std::string& key, const std::string& value) {
  add_key(key, kString);
  append_string(metadata_, value);
}

void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& values) {
  add_key(key, kArray);
  append<uint32_t>(metadata_, kString);
  append<uint64_t>(metadata_, values.size());
  for (const std::string& v : values) append_string(metadata_, v);
}

void GgufWriter::add_int32_array(const std::string& key, const std::vector<int32_t>& values) {
  add_key(key, kArray);
  append<uint32_t>(metadata_, kInt32);
  append<uint64_t>(metadata_, values.size());
  for (int32_t v : values) append(metadata_, v);
}

void GgufWriter::add_tensor(const std::string& name, const std::vector<int64_t>& shape,
                            GgmlType type, std::string data) {
  tensors_.push_back({name, shape, type, std::move(data)});
}

void GgufWriter::write(const std::string& path) const {
  std::string head;
  append(head, kMagic);
  append(head, kVersion);
  append<uint64_t>(head, tensors_.size());
  append<uint64_t>(head, metadata_count_);
  head += metadata_;
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    append_string(head, t.name);
    append<uint32_t>(head, static_cast<uint32_t>(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d)  // ggml: innermost dimension first
      append<uint64_t>(head, static_cast<uint64_t>(*d));
    append<uint32_t>(head, static_cast<uint32_t>(t.type));
    append<uint64_t>(head, offset);
    offset = aligned(offset + t.data.size());
  }
  head.resize(aligned(head.size()), '\0');
  write_atomically(path, [&](const std::string& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(head.data(), static_cast<std::streamsize>(head.size()));
    const std::string padding(kAlignment, '\0');
    for (const Tensor& t : tensors_) {
      out.write(t.data.data(), static_cast<std::streamsize>(t.data.size()));
      out.write(padding.data(),
                static_cast<std::streamsize>(aligned(t.data.size()) - t.data.size()));
    }
    out.flush();
    DST_CHECK(out.good(), IoError, path << ": cannot write the GGUF file");
  });
}

}  // namespace dst

// Writer of GGUF files (version 3), the model format of llama.cpp and ollama: metadata key/value
// pairs, then tensor descriptions, then the tensors' data, each aligned to 32 bytes. Torch-free;
// checkpoint/gguf_export.h maps a model onto it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dst {

// ggml tensor types this library writes.
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30 };

class GgufWriter {
 public:
  void add_uint32(const std::string& key, uint32_t value);
  void add_int32(const std::string& key, int32_t value);
  void add_float32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  void add_string(const std::string& key, const std::string& value);
  void add_string_array(const std::string& key, const std::vector<std::string>& values);
  void add_int32_array(const std::string& key, const std::vector<int32_t>& values);
  // `shape` in row-major (PyTorch) order; `data` the tensor's bytes in that order, encoded as
  // `type` (Q8_0: blocks of 32 along the last dimension).
  void add_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                  std::string data);
  // Writes the file atomically (core/atomic_file.h).
  void write(const std::string& path) const;
  uint64_t tensor_count() const { return tensors_.size(); }

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    GgmlType type;
    std::string data;
  };
  void add_key(const std::string& key, uint32_t value_type);
  std::string metadata_;
  uint64_t metadata_count_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace dst

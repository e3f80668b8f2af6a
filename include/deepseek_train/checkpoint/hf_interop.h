// Hugging Face model folders (config.json + model.safetensors, or shards listed by
// model.safetensors.index.json) as a source of initial weights and as an export format. Reading
// takes only the rows a rank needs of a tensor split along its first dimension.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/model/model_config.h"

namespace dst {

class SafetensorsFile;

// The tensors of a set of safetensors files (a model's shards, or a PEFT adapter's
// adapter_model.safetensors), each name in one file, read by rows.
class SafetensorsTensors {
 public:
  // Opens every file (headers only). `source` names the set in errors (a folder). Throws
  // CheckpointError naming the file for a bad header or a name held by two files.
  SafetensorsTensors(std::string source, const std::vector<std::string>& files);
  ~SafetensorsTensors();
  SafetensorsTensors(SafetensorsTensors&&) noexcept;
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;
  std::vector<int64_t> shape(const std::string& name) const;
  // Rows [row_begin, row_end) of tensor `name` (all rows: 0, -1) converted to fp32. Reads only
  // those rows' bytes. Throws CheckpointError naming the file and tensor (unknown dtype, ...).
  at::Tensor read_rows(const std::string& name, int64_t row_begin = 0, int64_t row_end = -1) const;

 protected:
  const std::string& source() const { return source_; }
  // Makes `name` a 2-D view: rows [row_offset, row_offset + rows) of element `index` of the
  // 3-D tensor `source` (a fused tensor holding one matrix per expert).
  void add_matrix_view(const std::string& name, const std::string& source, int64_t index,
                       int64_t row_offset, int64_t rows);

 private:
  struct MatrixView {
    std::string source;
    int64_t index = 0, row_offset = 0;
    std::vector<int64_t> shape;
  };
  std::string source_;
  std::map<std::string, MatrixView> views_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
};

// A Hugging Face model folder: its config.json and its weights. Routed experts stored fused as
// transformers v5 holds them (`mlp.experts.gate_up_proj` [E, 2*I, H], `mlp.experts.down_proj`
// [E, H, I]) read under the Hub's per-expert names (`mlp.experts.<e>.gate_proj.weight`, ...).
class HfModelReader : public SafetensorsTensors {
 public:
  // Opens `<dir>/config.json` and every safetensors file (headers only). Throws CheckpointError /
  // ConfigError naming the folder or file.
  explicit HfModelReader(const std::string& model_dir);
  const ModelConfig& config() const { return config_; }
  // Tensors of layers past num_hidden_layers (DeepSeek-V3's multi-token-prediction layers), which
  // the model does not use.
  int64_t tensors_beyond_last_layer() const;
  // The model's tensors by the names the families use: fused expert tensors as their per-expert
  // views, without the layers past num_hidden_layers.
  std::vector<std::string> model_tensor_names() const;

 private:
  void add_fused_expert_views();
  ModelConfig config_;
};

// Writes named tensors to a safetensors file atomically, each in its own dtype (float32, bfloat16,
// float16, int64, ...), with {"format": "pt"} metadata.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors);

// The size above which export_hf_model splits the weights into shards (Hugging Face's default).
inline constexpr int64_t kDefaultMaxShardBytes = int64_t{5} << 30;

// Writes `<dir>/config.json` and the weights (tensors cast to `dtype`: float32, bfloat16 or
// float16) as `<dir>/model.safetensors`, or, past `max_shard_bytes` (0: never), as
// model-0000i-of-0000N.safetensors shards with model.safetensors.index.json; each file atomically.
// Weight files of an earlier export in `dir` are removed first.
void export_hf_model(const std::string& dir, const ModelConfig& config,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                     at::ScalarType dtype, int64_t max_shard_bytes = kDefaultMaxShardBytes);

}  // namespace dst

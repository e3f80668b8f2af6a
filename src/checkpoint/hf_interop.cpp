#include "deepseek_train/checkpoint/hf_interop.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>

#include "deepseek_train/checkpoint/safetensors.h"
#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"

namespace dst {

namespace fs = std::filesystem;

namespace {

at::ScalarType torch_dtype(SafetensorsDtype dtype, const std::string& path,
                           const std::string& tensor) {
  switch (dtype) {
    case SafetensorsDtype::F32:
      return at::kFloat;
    case SafetensorsDtype::F16:
      return at::kHalf;
    case SafetensorsDtype::BF16:
      return at::kBFloat16;
    case SafetensorsDtype::F64:
      return at::kDouble;
    default:
      DST_THROW(CheckpointError, path << ": tensor '" << tensor << "' has dtype "
                                      << to_string(dtype)
                                      << "; model weights must be F32, F16, BF16 or F64");
  }
}

SafetensorsDtype safetensors_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return SafetensorsDtype::F32;
    case at::kHalf:
      return SafetensorsDtype::F16;
    case at::kBFloat16:
      return SafetensorsDtype::BF16;
    default:
      DST_THROW(ConfigError, "Hugging Face export: unsupported dtype " << type);
  }
}

}  // namespace

SafetensorsTensors::SafetensorsTensors(std::string source, const std::vector<std::string>& files)
    : source_(std::move(source)) {
  for (const std::string& path : files) {
    files_.push_back(std::make_unique<SafetensorsFile>(path));
    for (const SafetensorsEntry& entry : files_.back()->entries()) {
      DST_CHECK(where_.emplace(entry.name, files_.back().get()).second, CheckpointError,
                path << ": tensor '" << entry.name << "' is also in another file of " << source_);
    }
  }
}

SafetensorsTensors::~SafetensorsTensors() = default;
SafetensorsTensors::SafetensorsTensors(SafetensorsTensors&&) noexcept = default;

bool SafetensorsTensors::has(const std::string& name) const {
  return where_.count(name) == 1 || views_.count(name) == 1;
}

std::vector<std::string> SafetensorsTensors::names() const {
  std::vector<std::string> names;
  for (const auto& item : where_) names.push_back(item.first);
  for (const auto& item : views_) names.push_back(item.first);
  return names;
}

void SafetensorsTensors::add_matrix_view(const std::string& name, const std::string& source,
                                         int64_t index, int64_t row_offset, int64_t rows) {
  const std::vector<int64_t> full = shape(source);
  DST_CHECK(full.size() == 3 && index < full[0] && row_offset + rows <= full[1], CheckpointError,
            source_ << ": tensor '" << source << "' has shape " << at::IntArrayRef(full)
                    << ", too small for '" << name << "'");
  views_[name] = MatrixView{source, index, row_offset, {rows, full[2]}};
}

std::vector<int64_t> SafetensorsTensors::shape(const std::string& name) const {
  if (auto view = views_.find(name); view != views_.end()) return view->second.shape;
  auto it = where_.find(name);
  DST_CHECK(it != where_.end(), CheckpointError, source_ << ": no tensor '" << name << "'");
  return it->second->at(name).shape;
}

at::Tensor SafetensorsTensors::read_rows(const std::string& name, int64_t row_begin,
                                         int64_t row_end) const {
  if (auto view = views_.find(name); view != views_.end()) {
    const MatrixView& v = view->second;
    if (row_end < 0) row_end = v.shape[0];
    DST_CHECK(row_begin >= 0 && row_begin <= row_end && row_end <= v.shape[0], CheckpointError,
              source_ << ": tensor '" << name << "' has " << v.shape[0] << " rows, asked for ["
                      << row_begin << ", " << row_end << ")");
    return read_rows(v.source, v.index, v.index + 1)
        .select(0, 0)
        .narrow(0, v.row_offset + row_begin, row_end - row_begin)
        .contiguous();
  }
  auto it = where_.find(name);
  DST_CHECK(it != where_.end(), CheckpointError, source_ << ": no tensor '" << name << "'");
  const SafetensorsFile& file = *it->second;
  const SafetensorsEntry& entry = file.at(name);
  const at::ScalarType type = torch_dtype(entry.dtype, file.path(), name);
  std::vector<int64_t> shape = entry.shape;
  const int64_t rows = shape.empty() ? 1 : shape[0];
  if (row_end < 0) row_end = rows;
  DST_CHECK(row_begin >= 0 && row_begin <= row_end && row_end <= rows, CheckpointError,
            file.path() << ": tensor '" << name << "' has " << rows << " rows, asked for ["
                        << row_begin << ", " << row_end << ")");
  const uint64_t row_bytes = rows == 0 ? 0 : entry.nbytes() / static_cast<uint64_t>(rows);
  if (!shape.empty()) shape[0] = row_end - row_begin;
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(type));
  if (out.numel() > 0) file.read(name, out.data_ptr(), row_begin * row_bytes, row_end * row_bytes);
  return out.to(at::kFloat);
}

namespace {

// The weight files of a model folder, after checking that it has a config.json.
std::vector<std::string> hf_weight_files(const std::string& model_dir) {
  DST_CHECK(fs::exists(fs::path(model_dir) / "config.json"), CheckpointError,
            model_dir << ": not a Hugging Face model folder (no config.json)");
  return safetensors_files_in(model_dir);
}

}  // namespace

HfModelReader::HfModelReader(const std::string& model_dir)
    : SafetensorsTensors(model_dir, hf_weight_files(model_dir)),
      config_(model_config_from_hf_json((fs::path(model_dir) / "config.json").string())) {
  add_fused_expert_views();
}

void HfModelReader::add_fused_expert_views() {
  static const std::regex fused(R"((model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj))");
  std::smatch match;
  for (const std::string& name : names()) {
    if (!std::regex_match(name, match, fused)) continue;
    const std::string experts = match[1].str();
    const std::vector<int64_t> full = shape(name);
    DST_CHECK(full.size() == 3 && (match[2] == "down_proj" || full[1] % 2 == 0), CheckpointError,
              source() << ": tensor '" << name
                       << "' must be [experts, out, in] (gate_up_proj with an even out: gate rows "
                          "then up rows), has shape "
                       << at::IntArrayRef(full));
    for (int64_t e = 0; e < full[0]; ++e) {
      const std::string prefix = experts + "." + std::to_string(e) + ".";
      if (match[2] == "down_proj") {
        add_matrix_view(prefix + "down_proj.weight", name, e, 0, full[1]);
      } else {  // gate rows first, then up rows
        add_matrix_view(prefix + "gate_proj.weight", name, e, 0, full[1] / 2);
        add_matrix_view(prefix + "up_proj.weight", name, e, full[1] / 2, full[1] / 2);
      }
    }
  }
}

namespace {
bool beyond_last_layer(const std::string& name, int64_t layers) {
  static const std::regex layer(R"(model\.layers\.(\d+)\..*)");
  std::smatch match;
  return std::regex_match(name, match, layer) && std::stoll(match[1].str()) >= layers;
}
}  // namespace

int64_t HfModelReader::tensors_beyond_last_layer() const {
  int64_t count = 0;
  for (const std::string& name : names())
    if (beyond_last_layer(name, config_.num_hidden_layers)) ++count;
  return count;
}

std::vector<std::string> HfModelReader::model_tensor_names() const {
  static const std::regex fused(R"(.*\.mlp\.experts\.(gate_up_proj|down_proj))");
  std::vector<std::string> kept;
  for (const std::string& name : names())
    if (!std::regex_match(name, fused) && !beyond_last_layer(name, config_.num_hidden_layers))
      kept.push_back(name);
  return kept;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<at::Tensor> keep;
  std::vector<SafetensorsTensorView> views;
  for (const auto& [name, tensor] : tensors) {
    keep.push_back(tensor.detach().to(at::kCPU).contiguous());
    views.push_back({name, safetensors_dtype(keep.back().scalar_type()), keep.back().sizes().vec(),
                     keep.back().data_ptr()});
  }
  write_safetensors(path, views, {{"format", "pt"}});
}

void export_hf_model(const std::string& dir, const ModelConfig& config,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                     at::ScalarType dtype, int64_t max_shard_bytes) {
  // Shards in the order given, a new one whenever the next tensor would pass the limit.
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor cast = tensor.to(dtype);
    const int64_t bytes = cast.numel() * cast.element_size();
    if (max_shard_bytes > 0 && shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(name, std::move(cast));
    shard_bytes += bytes;
    total += bytes;
  }
  fs::create_directories(dir);
  // Stale weight files of an earlier export would shadow or contradict these.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "model.safetensors" || name == "model.safetensors.index.json" ||
        (name.rfind("model-", 0) == 0 && entry.path().extension() == ".safetensors"))
      fs::remove(entry.path(), ec);
  }
  if (shards.size() == 1) {
    save_safetensors((fs::path(dir) / "model.safetensors").string(), shards[0]);
  } else {
    std::map<std::string, std::string> weight_map;
    for (size_t i = 0; i < shards.size(); ++i) {
      char file[64];
      std::snprintf(file, sizeof(file), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      save_safetensors((fs::path(dir) / file).string(), shards[i]);
      for (const auto& item : shards[i]) weight_map[item.first] = file;
    }
    write_safetensors_index((fs::path(dir) / "model.safetensors.index.json").string(), weight_map,
                            static_cast<uint64_t>(total));
  }
  write_file_atomically((fs::path(dir) / "config.json").string(), model_config_to_hf_json(config));
}

}  // namespace dst

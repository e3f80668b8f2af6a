// manifest.json -> CheckpointManifest. Every field the reader uses is checked here, so the reader
// (which needs libtorch) only deals with I/O and tensor assembly.
#include "deepseek_train/checkpoint/checkpoint_manifest.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "deepseek_train/core/error.h"

namespace dst {
namespace {

using nlohmann::json;

const json& field(const json& object, const char* key, const std::string& where) {
  DST_CHECK(object.is_object() && object.contains(key), CheckpointError,
            where << ": missing key '" << key << "'");
  return object.at(key);
}

[[noreturn]] void wrong_type(const char* key, const std::string& where) {
  DST_THROW(CheckpointError, where << ": key '" << key << "' has the wrong type");
}

const json& object_field(const json& object, const char* key, const std::string& where) {
  const json& value = field(object, key, where);
  if (!value.is_object()) wrong_type(key, where);
  return value;
}

std::string string_field(const json& object, const char* key, const std::string& where) {
  const json& value = field(object, key, where);
  if (!value.is_string()) wrong_type(key, where);
  return value.get<std::string>();
}

// An optional string: "" when absent.
std::string optional_string_field(const json& object, const char* key, const std::string& where) {
  if (!object.contains(key)) return "";
  return string_field(object, key, where);
}

double number_field(const json& object, const char* key, const std::string& where) {
  const json& value = field(object, key, where);
  if (!value.is_number()) wrong_type(key, where);
  return value.get<double>();
}

// An integer that fits T (an integral float such as 3.0 is accepted, as nlohmann's get<> did).
template <typename T>
T integer_value(const json& value, const char* key, const std::string& where) {
  static_assert(std::is_integral_v<T> && std::is_signed_v<T>);
  constexpr T kMin = std::numeric_limits<T>::min();
  constexpr T kMax = std::numeric_limits<T>::max();
  bool in_range = false;
  T result = 0;
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    in_range = v <= static_cast<uint64_t>(kMax);
    if (in_range) result = static_cast<T>(v);
  } else if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    in_range = v >= kMin && v <= kMax;
    if (in_range) result = static_cast<T>(v);
  } else if (value.is_number_float()) {
    const double v = value.get<double>();
    if (!std::isfinite(v) || v != std::trunc(v)) wrong_type(key, where);
    // [kMin, -kMin): both bounds are exact powers of two as doubles.
    in_range = v >= static_cast<double>(kMin) && v < -static_cast<double>(kMin);
    if (in_range) result = static_cast<T>(v);
  } else {
    wrong_type(key, where);
  }
  DST_CHECK(in_range, CheckpointError,
            where << ": key '" << key << "' is out of range (" << value.dump() << ")");
  return result;
}

template <typename T>
T integer_field(const json& object, const char* key, const std::string& where) {
  return integer_value<T>(field(object, key, where), key, where);
}

// A data file must be a plain relative path inside the checkpoint directory.
bool is_inside_directory(const std::string& file) {
  const std::filesystem::path path(file);
  if (file.empty() || !path.is_relative()) return false;
  for (const auto& part : path)
    if (part == "..") return false;
  return true;
}

ManifestPiece parse_piece(const json& piece, const ManifestTensor& tensor,
                          const std::map<std::string, ManifestFile>& files,
                          const std::string& where) {
  ManifestPiece p;
  p.file = string_field(piece, "file", where);
  p.dataset = string_field(piece, "dataset", where);
  PieceLocation& l = p.location;
  l.split_dim = integer_field<int>(piece, "split_dim", where);
  l.block_start = integer_field<int64_t>(piece, "block_start", where);
  l.block_length = integer_field<int64_t>(piece, "block_length", where);
  l.begin = integer_field<int64_t>(piece, "begin", where);
  l.end = integer_field<int64_t>(piece, "end", where);
  const std::string file = printable(p.file);
  DST_CHECK(files.count(p.file) == 1, CheckpointError,
            where << ": piece in file '" << file << "', which the manifest does not list");
  const int rank = static_cast<int>(tensor.shape.size());
  DST_CHECK(l.split_dim >= -1 && l.split_dim < rank, CheckpointError,
            where << ": malformed piece location in '" << file << "': key 'split_dim' "
                  << l.split_dim << " is not in [-1, " << rank << ")");
  DST_CHECK(l.begin >= 0 && l.begin <= l.end, CheckpointError,
            where << ": malformed piece location in '" << file << "': keys 'begin' " << l.begin
                  << " and 'end' " << l.end << " do not satisfy 0 <= begin <= end");
  DST_CHECK(l.block_start >= 0 && l.block_length >= 0, CheckpointError,
            where << ": malformed piece location in '" << file << "': keys 'block_start' "
                  << l.block_start << " and 'block_length' " << l.block_length
                  << " must be non-negative");
  if (l.split_dim >= 0) {
    // The reader pads the tensor up to the block's end along split_dim: that must fit in int64.
    int64_t block_end = 0;
    bool fits = !__builtin_add_overflow(l.block_start, l.block_length, &block_end);
    int64_t numel = 1;
    for (int d = 0; d < rank && fits; ++d) {
      const int64_t extent =
          d == l.split_dim ? std::max(tensor.shape[d], block_end) : tensor.shape[d];
      fits = !__builtin_mul_overflow(numel, extent, &numel);
    }
    DST_CHECK(fits, CheckpointError,
              where << ": malformed piece location in '" << file << "': keys 'block_start' "
                    << l.block_start << " and 'block_length' " << l.block_length
                    << " make the tensor too large");
  }
  return p;
}

}  // namespace

bool is_checkpoint_dtype_name(const std::string& name) {
  return name == "float32" || name == "bfloat16" || name == "float16" || name == "int64" ||
         name == "uint8";
}

CheckpointManifest parse_checkpoint_manifest(const std::string& json_text,
                                             const std::string& source) {
  const std::string& path = source;
  // Valid manifests nest 6 levels; much deeper JSON would overflow the stack in nlohmann's
  // recursive dump() (of the model section) and copies.
  constexpr int kMaxJsonDepth = 64;
  const json::parser_callback_t limit_depth = [&](int depth, json::parse_event_t event, json&) {
    if (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) {
      DST_CHECK(depth < kMaxJsonDepth, CheckpointError,
                path << ": JSON nested deeper than " << kMaxJsonDepth << " levels");
    }
    return true;
  };
  json manifest;
  try {
    manifest = json::parse(json_text, limit_depth);
  } catch (const json::parse_error& e) {
    DST_THROW(CheckpointError, path << ": invalid JSON at byte " << e.byte);
  } catch (const json::exception& e) {
    // A number too large for a double (out_of_range.406) carries no position.
    DST_THROW(CheckpointError, path << ": invalid JSON: " << printable(e.what()));
  }
  const bool is_manifest = manifest.is_object() && manifest.contains("format") &&
                           manifest.at("format").is_string() &&
                           manifest.at("format").get<std::string>() == kCheckpointFormat;
  DST_CHECK(
      is_manifest, CheckpointError,
      path << ": not a deepseek_train checkpoint manifest (format '" << kCheckpointFormat << "')");
  CheckpointManifest result;
  result.format = kCheckpointFormat;

  CheckpointInfo& info = result.info;
  info.step = integer_field<int64_t>(manifest, "step", path);
  info.optimizer_steps = integer_field<int64_t>(manifest, "optimizer_steps", path);
  info.sampler_state = string_field(manifest, "sampler", path);
  const json& scaler = object_field(manifest, "loss_scaler", path);
  const std::string scaler_where = path + " loss_scaler";
  info.loss_scale = number_field(scaler, "scale", scaler_where);
  info.loss_scaler_clean_steps = integer_field<int64_t>(scaler, "clean_steps", scaler_where);
  info.skipped_steps = integer_field<int64_t>(scaler, "skipped_steps", scaler_where);
  const json& layout = object_field(manifest, "layout", path);
  const std::string layout_where = path + " layout";
  info.layout.world_size = integer_field<int>(layout, "world_size", layout_where);
  info.layout.dp = integer_field<int>(layout, "dp", layout_where);
  info.layout.tp = integer_field<int>(layout, "tp", layout_where);
  info.layout.pp = integer_field<int>(layout, "pp", layout_where);
  info.layout.zero_stage = integer_field<int>(layout, "zero_stage", layout_where);
  info.layout.virtual_stages = integer_field<int>(layout, "virtual_stages", layout_where);
  info.model = model_config_from_hf_json_text(field(manifest, "model", path).dump(), path);
  info.param_dtype = string_field(manifest, "param_dtype", path);
  info.recipe = optional_string_field(manifest, "recipe", path);
  info.library_version = optional_string_field(manifest, "library_version", path);
  if (manifest.contains("provenance") && manifest.at("provenance").is_object())
    info.provenance = manifest.at("provenance").dump();

  if (manifest.contains("encryption") && !manifest.at("encryption").is_null()) {
    const json& encryption = manifest.at("encryption");
    const std::string where = path + " encryption";
    ManifestEncryption e;
    e.key_fingerprint = string_field(encryption, "key_fingerprint", where);
    e.cipher = optional_string_field(encryption, "cipher", where);
    result.encryption = e;
  }

  int64_t total_bytes = 0;
  for (const auto& [file, entry] : object_field(manifest, "files", path).items()) {
    const std::string where = path + " file " + printable(file);
    DST_CHECK(is_inside_directory(file), CheckpointError,
              where << ": a data file must be a relative path inside the checkpoint directory");
    ManifestFile f;
    f.sha256 = string_field(entry, "sha256", where);
    f.bytes = integer_field<int64_t>(entry, "bytes", where);
    DST_CHECK(f.bytes >= 0 && !__builtin_add_overflow(total_bytes, f.bytes, &total_bytes),
              CheckpointError, where << ": key 'bytes' is out of range (" << f.bytes << ")");
    result.files.emplace(file, f);
  }

  for (const auto& [name, entry] : object_field(manifest, "tensors", path).items()) {
    const std::string where = path + " tensor '" + printable(name) + "'";
    ManifestTensor tensor;
    const json& shape = field(entry, "shape", where);
    if (!shape.is_array()) wrong_type("shape", where);
    int64_t numel = 1;
    for (const json& dim : shape) {
      tensor.shape.push_back(integer_value<int64_t>(dim, "shape", where));
      DST_CHECK(
          tensor.shape.back() >= 0 && !__builtin_mul_overflow(numel, tensor.shape.back(), &numel),
          CheckpointError,
          where << ": key 'shape' " << printable(shape.dump())
                << " must hold non-negative dims whose product fits in int64");
    }
    for (const auto& [kind, state_json] : object_field(entry, "states", where).items()) {
      const std::string state_where = where + " state '" + printable(kind) + "'";
      ManifestState state;
      state.dtype = string_field(state_json, "dtype", state_where);
      DST_CHECK(is_checkpoint_dtype_name(state.dtype), CheckpointError,
                state_where << ": unknown dtype '" << printable(state.dtype) << "'");
      const json& pieces = field(state_json, "pieces", state_where);
      if (!pieces.is_array()) wrong_type("pieces", state_where);
      for (std::size_t i = 0; i < pieces.size(); ++i) {
        state.pieces.push_back(parse_piece(pieces[i], tensor, result.files,
                                           state_where + " piece " + std::to_string(i)));
      }
      tensor.states.emplace(kind, std::move(state));
    }
    result.tensors.emplace(name, std::move(tensor));
  }
  return result;
}

}  // namespace dst

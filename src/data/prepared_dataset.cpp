// Reader of prepared corpora: manifest parsing, shard attributes and row reads by HDF5 hyperslab.
#include "deepseek_train/data/prepared_dataset.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/hdf5_io.h"
#include "corpus_shards.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/corpus_prepare.h"

namespace dst {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int64_t kIgnoreIndex = -100;

std::optional<std::string> read_string_attribute(hid_t location, const char* name) {
  if (H5Aexists(location, name) <= 0) return std::nullopt;
  hdf5::Handle attribute(H5Aopen(location, name, H5P_DEFAULT), H5Aclose);
  if (!attribute.ok()) return std::nullopt;
  hdf5::Handle type(H5Aget_type(attribute.get()), H5Tclose);
  if (!type.ok() || H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) != 0)
    return std::nullopt;
  const size_t size = H5Tget_size(type.get());
  if (size == 0) return std::nullopt;
  std::string value(size, '\0');
  if (H5Aread(attribute.get(), type.get(), value.data()) < 0) return std::nullopt;
  value.resize(std::strlen(value.c_str()));
  return value;
}

std::optional<int64_t> read_int64_attribute(hid_t location, const char* name) {
  if (H5Aexists(location, name) <= 0) return std::nullopt;
  hdf5::Handle attribute(H5Aopen(location, name, H5P_DEFAULT), H5Aclose);
  if (!attribute.ok()) return std::nullopt;
  hdf5::Handle type(H5Aget_type(attribute.get()), H5Tclose);
  if (!type.ok() || H5Tget_class(type.get()) != H5T_INTEGER) return std::nullopt;
  int64_t value = 0;
  if (H5Aread(attribute.get(), H5T_NATIVE_INT64, &value) < 0) return std::nullopt;
  return value;
}

// Shape of a 2-D integer dataset, or nullopt.
std::optional<std::pair<int64_t, int64_t>> matrix_shape(hid_t dataset) {
  hdf5::Handle type(H5Dget_type(dataset), H5Tclose);
  if (!type.ok() || H5Tget_class(type.get()) != H5T_INTEGER) return std::nullopt;
  hdf5::Handle space(H5Dget_space(dataset), H5Sclose);
  if (!space.ok() || H5Sget_simple_extent_ndims(space.get()) != 2) return std::nullopt;
  hsize_t dims[2] = {0, 0};
  if (H5Sget_simple_extent_dims(space.get(), dims, nullptr) != 2) return std::nullopt;
  return std::make_pair(static_cast<int64_t>(dims[0]), static_cast<int64_t>(dims[1]));
}

hdf5::Handle open_dataset(hid_t file, const char* name) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return hdf5::Handle();
  return hdf5::Handle(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
}

// Manifest field access with one-line errors naming the manifest and the key.
class ManifestReader {
 public:
  explicit ManifestReader(std::string path) : path_(std::move(path)) {}

  const json& member(const json& parent, const std::string& key, const std::string& where) const {
    const auto found = parent.is_object() ? parent.find(key) : parent.end();
    DST_CHECK(parent.is_object() && found != parent.end(), DataError,
              path_ << ": missing key '" << where << key << "'");
    return *found;
  }
  std::string string(const json& parent, const std::string& key, const std::string& where) const {
    const json& value = member(parent, key, where);
    DST_CHECK(value.is_string(), DataError,
              path_ << ": key '" << where << key << "' must be a string");
    return value.get<std::string>();
  }
  int64_t integer(const json& parent, const std::string& key, const std::string& where,
                  int64_t minimum) const {
    const json& value = member(parent, key, where);
    DST_CHECK(value.is_number_integer() && value.get<int64_t>() >= minimum, DataError,
              path_ << ": key '" << where << key << "' must be an integer >= " << minimum);
    return value.get<int64_t>();
  }

 private:
  std::string path_;
};

}  // namespace

int64_t PreparedManifest::rows(const std::string& split) const {
  const auto found = splits.find(split);
  return found == splits.end() ? 0 : found->second.rows;
}

PreparedManifest read_prepared_manifest(const std::string& dir, const EncryptionKey* key) {
  PreparedManifest manifest;
  manifest.path = (fs::path(dir) / kPreparedManifestName).string();
  const std::string& path = manifest.path;
  std::ifstream in(path, std::ios::binary);
  DST_CHECK(in.good(), DataError,
            path << ": cannot read the prepared-corpus manifest (missing? run `dstrain prepare`)");
  std::ostringstream text;
  text << in.rdbuf();
  json root;
  try {
    root = json::parse(text.str());
  } catch (const json::exception& e) {
    DST_THROW(DataError, path << ": not valid JSON (" << e.what() << ")");
  }
  const ManifestReader r(path);
  if (root.is_object() && root.contains("sealed")) {
    // An encrypted corpus: the per-shard data, sources and counts are sealed.
    manifest.key_fingerprint =
        r.string(r.member(root, "encryption", ""), "key_fingerprint", "encryption.");
    DST_CHECK(key != nullptr, DataError,
              path << ": the prepared corpus is encrypted (key " << manifest.key_fingerprint
                   << "); give its key: data.encryption.key_file or key_env (dstrain eval, "
                      "tokenize: --key-file)");
    DST_CHECK(key->fingerprint() == manifest.key_fingerprint, DataError,
              path << ": the corpus was encrypted with key " << manifest.key_fingerprint
                   << ", not with the key given (" << key->fingerprint() << ")");
    root = detail::unseal_manifest(std::move(root), *key, path);
  }
  const std::string format = r.string(root, "format", "");
  DST_CHECK(format == kPreparedFormat, DataError,
            path << ": format is '" << format << "', expected '" << kPreparedFormat << "'");
  manifest.format_version = static_cast<int>(r.integer(root, "format_version", "", 1));
  DST_CHECK(manifest.format_version == kPreparedFormatVersion, DataError,
            path << ": format_version " << manifest.format_version << " is not supported (this "
                 << "build reads version " << kPreparedFormatVersion << "; re-run prepare)");
  manifest.seq_len = r.integer(root, "seq_len", "", 1);
  const json& tokenizer = r.member(root, "tokenizer", "");
  manifest.tokenizer_describe = r.string(tokenizer, "describe", "tokenizer.");
  manifest.tokenizer_fingerprint = r.string(tokenizer, "fingerprint", "tokenizer.");
  manifest.vocab_size = static_cast<int32_t>(r.integer(tokenizer, "vocab_size", "tokenizer.", 1));
  manifest.eos_id = static_cast<int32_t>(r.integer(tokenizer, "eos_id", "tokenizer.", 0));
  const json& splits = r.member(root, "splits", "");
  DST_CHECK(splits.is_object(), DataError, path << ": key 'splits' must be an object");
  for (const auto& [name, value] : splits.items()) {
    const std::string where = "splits." + name + ".";
    PreparedSplitInfo split;
    split.rows = r.integer(value, "rows", where, 0);
    split.documents = r.integer(value, "documents", where, 0);
    split.tokens = r.integer(value, "tokens", where, 0);
    const json& shards = r.member(value, "shards", where);
    DST_CHECK(shards.is_array(), DataError,
              path << ": key '" << where << "shards' must be an array");
    int64_t rows = 0;
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string shard_where = where + "shards[" + std::to_string(i) + "].";
      PreparedShardInfo shard;
      shard.file = r.string(shards[i], "file", shard_where);
      DST_CHECK(!shard.file.empty() && fs::path(shard.file).filename() == shard.file, DataError,
                path << ": key '" << shard_where << "file' must be a plain file name");
      shard.rows = r.integer(shards[i], "rows", shard_where, 0);
      shard.documents = r.integer(shards[i], "documents", shard_where, 0);
      shard.tokens = r.integer(shards[i], "tokens", shard_where, 0);
      shard.content_hash = r.string(shards[i], "content_hash", shard_where);
      rows += shard.rows;
      split.shards.push_back(std::move(shard));
    }
    DST_CHECK(rows == split.rows, DataError,
              path << ": key '" << where << "rows' is " << split.rows << " but its shards hold "
                   << rows << " rows");
    manifest.splits[name] = std::move(split);
  }
  return manifest;
}

namespace {

// Opens a shard file read-only: from disk, or, when it is encrypted, decrypted into an in-memory
// HDF5 image (the plaintext never reaches the disk). Throws DataError for an encrypted shard
// without a key, CheckpointError when it does not authenticate; an invalid handle when HDF5
// cannot open the file.
hdf5::Handle open_shard_file(const std::string& path, const EncryptionKey* key) {
  if (!file_is_encrypted(path))
    return hdf5::Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  DST_CHECK(key != nullptr, DataError,
            path << ": the shard is encrypted; give the corpus's key (data.encryption.key_file "
                    "or key_env, --key-file)");
  std::string image = read_and_decrypt_file(*key, path, fs::path(path).filename().string());
  hdf5::Handle access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  const bool ok = access.ok() &&
                  H5Pset_fapl_core(access.get(), 1 << 20, /*backing_store=*/0) >= 0 &&
                  H5Pset_file_image(access.get(), image.data(), image.size()) >= 0;
  std::fill(image.begin(), image.end(), '\0');  // HDF5 holds its own copy
  DST_CHECK(ok, DataError, path << ": cannot open the decrypted shard in memory");
  // The core driver refuses a file image under the name of a file that exists, and treats two
  // images of one name as one file: a name that cannot exist, unique per shard path.
  const std::string image_name =
      "/dev/null/" +
      std::to_string(std::hash<std::string>()(fs::absolute(path).lexically_normal().string())) +
      "-" + fs::path(path).filename().string();
  return hdf5::Handle(H5Fopen(image_name.c_str(), H5F_ACC_RDONLY, access.get()), H5Fclose);
}

// The attributes of an open shard file (read_prepared_shard_attributes' checks).
std::optional<PreparedShardAttributes> shard_attributes(hid_t root) {
  PreparedShardAttributes a;
  const auto format = read_string_attribute(root, "format");
  const auto format_version = read_int64_attribute(root, "format_version");
  const auto split = read_string_attribute(root, "split");
  const auto shard_index = read_int64_attribute(root, "shard_index");
  const auto content_hash = read_string_attribute(root, "content_hash");
  const auto seq_len = read_int64_attribute(root, "seq_len");
  const auto documents = read_int64_attribute(root, "documents");
  const auto tokens = read_int64_attribute(root, "tokens");
  const auto dropped = read_int64_attribute(root, "dropped_tail_tokens");
  const auto rows = read_int64_attribute(root, "rows");
  const auto fingerprint = read_string_attribute(root, "tokenizer_fingerprint");
  const auto eos_id = read_int64_attribute(root, "eos_id");
  if (!format || !format_version || !split || !shard_index || !content_hash || !seq_len ||
      !documents || !tokens || !dropped || !rows || !fingerprint || !eos_id)
    return std::nullopt;
  for (const char* name : {"tokens", "loss_mask"}) {
    hdf5::Handle dataset = open_dataset(root, name);
    if (!dataset.ok()) return std::nullopt;
    const auto shape = matrix_shape(dataset.get());
    if (!shape || shape->first != *rows || shape->second != *seq_len + 1) return std::nullopt;
  }
  a.format = *format;
  a.format_version = *format_version;
  a.split = *split;
  a.shard_index = *shard_index;
  a.content_hash = *content_hash;
  a.seq_len = *seq_len;
  a.documents = *documents;
  a.tokens = *tokens;
  a.dropped_tail_tokens = *dropped;
  a.rows = *rows;
  a.tokenizer_fingerprint = *fingerprint;
  a.eos_id = *eos_id;
  return a;
}

}  // namespace

std::optional<PreparedShardAttributes> read_prepared_shard_attributes(const std::string& path,
                                                                      const EncryptionKey* key) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  hdf5::Quiet quiet;
  try {
    const hdf5::Handle file = open_shard_file(path, key);
    if (!file.ok()) return std::nullopt;
    return shard_attributes(file.get());
  } catch (const std::exception&) {
    return std::nullopt;  // unreadable, encrypted without a key, or not authentic
  }
}

// ---------------------------------------------------------------------------------------------
// PreparedDataset
// ---------------------------------------------------------------------------------------------

struct PreparedDataset::Impl {
  struct Shard {
    std::string path;
    int64_t rows = 0;
    hdf5::Handle file;
    hdf5::Handle tokens;
    hdf5::Handle loss_mask;
  };

  PreparedManifest manifest;
  std::string split;
  int64_t seq_len = 0;
  int64_t rows = 0;
  std::vector<Shard> shards;
  std::vector<int64_t> first_row;  // per shard
  mutable std::mutex mutex;        // serialises this dataset's HDF5 reads

  // Reads `count` consecutive rows starting at local row `row` of shard s.
  void read_rows(const Shard& s, int64_t row, int64_t count, int32_t* tokens, uint8_t* mask) const {
    const hsize_t start[2] = {static_cast<hsize_t>(row), 0};
    const hsize_t extent[2] = {static_cast<hsize_t>(count), static_cast<hsize_t>(seq_len + 1)};
    hdf5::Quiet quiet;
    hdf5::Handle memory(H5Screate_simple(2, extent, nullptr), H5Sclose);
    for (int which = 0; which < 2; ++which) {
      const hid_t dataset = which == 0 ? s.tokens.get() : s.loss_mask.get();
      hdf5::Handle space(H5Dget_space(dataset), H5Sclose);
      const bool ok =
          memory.ok() && space.ok() &&
          H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, extent, nullptr) >= 0 &&
          H5Dread(dataset, which == 0 ? H5T_NATIVE_INT32 : H5T_NATIVE_UINT8, memory.get(),
                  space.get(), H5P_DEFAULT,
                  which == 0 ? static_cast<void*>(tokens) : static_cast<void*>(mask)) >= 0;
      DST_CHECK(ok, DataError,
                s.path << ": cannot read " << (which == 0 ? "tokens" : "loss_mask") << " rows "
                       << row << ".." << row + count - 1);
    }
  }
};

PreparedDataset::PreparedDataset(const std::string& dir, const std::string& split,
                                 const std::string& expected_tokenizer_fingerprint,
                                 const EncryptionKey* key)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.manifest = read_prepared_manifest(dir, key);
  m.split = split;
  m.seq_len = m.manifest.seq_len;
  const std::string& manifest_path = m.manifest.path;
  DST_CHECK(expected_tokenizer_fingerprint.empty() ||
                expected_tokenizer_fingerprint == m.manifest.tokenizer_fingerprint,
            DataError,
            manifest_path << ": corpus was prepared with tokenizer "
                          << m.manifest.tokenizer_describe << " (fingerprint "
                          << m.manifest.tokenizer_fingerprint
                          << "), but the tokenizer in use has fingerprint "
                          << expected_tokenizer_fingerprint
                          << "; re-run `dstrain prepare` with this tokenizer");
  const auto found = m.manifest.splits.find(split);
  DST_CHECK(found != m.manifest.splits.end(), DataError,
            manifest_path << ": no split '" << split << "' (expected train or validation)");
  const PreparedSplitInfo& info = found->second;
  DST_CHECK(info.rows > 0, DataError, manifest_path << ": split '" << split << "' has no rows");
  hdf5::Quiet quiet;
  for (const PreparedShardInfo& shard_info : info.shards) {
    Impl::Shard shard;
    shard.path = (fs::path(dir) / shard_info.file).string();
    shard.rows = shard_info.rows;
    std::error_code ec;
    DST_CHECK(fs::is_regular_file(shard.path, ec), DataError,
              shard.path << ": missing (listed in " << manifest_path << ")");
    shard.file = open_shard_file(shard.path, key);
    const std::optional<PreparedShardAttributes> attributes =
        shard.file.ok() ? shard_attributes(shard.file.get()) : std::nullopt;
    DST_CHECK(attributes.has_value(), DataError,
              shard.path << ": missing or not a valid prepared shard (listed in " << manifest_path
                         << ")");
    DST_CHECK(attributes->content_hash == shard_info.content_hash &&
                  attributes->rows == shard_info.rows && attributes->seq_len == m.seq_len,
              DataError,
              shard.path << ": content differs from " << manifest_path
                         << " (changed after the manifest was written; re-run prepare)");
    shard.tokens = open_dataset(shard.file.get(), "tokens");
    shard.loss_mask = open_dataset(shard.file.get(), "loss_mask");
    DST_CHECK(shard.tokens.ok() && shard.loss_mask.ok(), DataError,
              shard.path << ": cannot open datasets 'tokens' and 'loss_mask'");
    m.first_row.push_back(m.rows);
    m.rows += shard.rows;
    m.shards.push_back(std::move(shard));
  }
}

PreparedDataset::~PreparedDataset() = default;

int64_t PreparedDataset::size() const { return impl_->rows; }
int64_t PreparedDataset::seq_len() const { return impl_->seq_len; }
const PreparedManifest& PreparedDataset::manifest() const { return impl_->manifest; }
const std::string& PreparedDataset::split() const { return impl_->split; }

void PreparedDataset::read_rows(const std::vector<int64_t>& indices, std::vector<int32_t>* tokens,
                                std::vector<uint8_t>* loss_mask) const {
  const Impl& m = *impl_;
  DST_CHECK(tokens != nullptr && loss_mask != nullptr, InternalError,
            "PreparedDataset::read_rows: output vectors must not be null");
  for (int64_t index : indices)
    DST_CHECK(index >= 0 && index < m.rows, DataError,
              m.manifest.path << ": " << m.split << " row " << index << " out of range [0, "
                              << m.rows << ")");
  const size_t width = static_cast<size_t>(m.seq_len + 1);
  tokens->resize(indices.size() * width);
  loss_mask->resize(indices.size() * width);
  std::lock_guard<std::mutex> lock(m.mutex);
  size_t k = 0;
  while (k < indices.size()) {
    const int64_t index = indices[k];
    const size_t shard = static_cast<size_t>(
        std::upper_bound(m.first_row.begin(), m.first_row.end(), index) - m.first_row.begin() - 1);
    const int64_t local = index - m.first_row[shard];
    // Consecutive indices within a shard are read with one hyperslab.
    size_t run = 1;
    while (k + run < indices.size() && indices[k + run] == index + static_cast<int64_t>(run) &&
           local + static_cast<int64_t>(run) < m.shards[shard].rows)
      ++run;
    m.read_rows(m.shards[shard], local, static_cast<int64_t>(run), tokens->data() + k * width,
                loss_mask->data() + k * width);
    k += run;
  }
}

TokenBatch PreparedDataset::batch(const std::vector<int64_t>& indices) const {
  const int64_t s = impl_->seq_len;
  const size_t width = static_cast<size_t>(s + 1);
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  read_rows(indices, &tokens, &mask);
  TokenBatch out;
  out.rows = static_cast<int64_t>(indices.size());
  out.seq_len = s;
  out.input_ids.resize(indices.size() * static_cast<size_t>(s));
  out.labels.resize(indices.size() * static_cast<size_t>(s));
  for (size_t r = 0; r < indices.size(); ++r) {
    const int32_t* row_tokens = tokens.data() + r * width;
    const uint8_t* row_mask = mask.data() + r * width;
    int64_t* inputs = out.input_ids.data() + r * static_cast<size_t>(s);
    int64_t* labels = out.labels.data() + r * static_cast<size_t>(s);
    for (int64_t j = 0; j < s; ++j) {
      inputs[j] = row_tokens[j];
      labels[j] = row_mask[j + 1] != 0 ? row_tokens[j + 1] : kIgnoreIndex;
    }
  }
  return out;
}

}  // namespace dst

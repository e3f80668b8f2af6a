// Output shards of `dstrain prepare` (see corpus_shards.h).
#include "data/corpus_shards.h"

#include <unistd.h>

#include <algorithm>
#include <iomanip>
#include <sstream>

#include "core/hdf5_io.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/corpus_prepare.h"

namespace dst::detail {

std::string shard_file_name(const std::string& split, int64_t index) {
  std::ostringstream name;
  name << split << "-" << std::setw(5) << std::setfill('0') << index << ".h5";
  return name.str();
}

std::optional<int64_t> shard_index_of(const std::string& name, const std::string& split) {
  const std::string prefix = split + "-";
  const std::string suffix = ".h5";
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 12 || digits.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stoll(digits);
}

bool is_leftover_temporary(const std::string& name) {
  const size_t marker = name.rfind(".tmp.");
  if (marker == std::string::npos) return false;
  const std::string target = name.substr(0, marker);
  const std::string pid = name.substr(marker + 5);
  if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) return false;
  if (pid == std::to_string(::getpid())) return false;
  return target == kPreparedManifestName || shard_index_of(target, "train") ||
         shard_index_of(target, "validation");
}

namespace {

void write_string_attribute(hid_t location, const char* name, const std::string& value,
                            const std::string& path) {
  hdf5::Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  DST_CHECK(type.ok() && H5Tset_size(type.get(), std::max<size_t>(value.size(), 1)) >= 0 &&
                H5Tset_strpad(type.get(), H5T_STR_NULLPAD) >= 0,
            IoError, path << ": cannot create a string type for attribute '" << name << "'");
  hdf5::Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  hdf5::Handle attribute(
      H5Acreate2(location, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  DST_CHECK(attribute.ok() && H5Awrite(attribute.get(), type.get(), value.c_str()) >= 0, IoError,
            path << ": cannot write attribute '" << name << "'");
}

void write_int64_attribute(hid_t location, const char* name, int64_t value,
                           const std::string& path) {
  hdf5::Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  hdf5::Handle attribute(
      H5Acreate2(location, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  DST_CHECK(attribute.ok() && H5Awrite(attribute.get(), H5T_NATIVE_INT64, &value) >= 0, IoError,
            path << ": cannot write attribute '" << name << "'");
}

void write_matrix(hid_t file, const char* name, hid_t file_type, hid_t memory_type,
                  const void* data, int64_t rows, int64_t columns, hid_t dcpl,
                  const std::string& path) {
  const hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(columns)};
  hdf5::Handle space(H5Screate_simple(2, dims, nullptr), H5Sclose);
  hdf5::Handle dataset(
      H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose);
  DST_CHECK(dataset.ok(), IoError, path << ": cannot create dataset '" << name << "'");
  DST_CHECK(
      rows == 0 || H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0,
      IoError, path << ": cannot write dataset '" << name << "'");
}

}  // namespace

namespace {

// Creates the shard file `name` with `access` (default: on disk; the core driver: in memory) and
// writes `packed` and the attributes; returns the open file.
hdf5::Handle create_shard_file(const std::string& name, hid_t access, const PackedShard& packed,
                               const PreparedShardAttributes& a, const std::string& path) {
  // No modification times in object headers: equal content gives byte-identical files.
  hdf5::Handle fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  hdf5::Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  DST_CHECK(fcpl.ok() && dcpl.ok() && H5Pset_obj_track_times(fcpl.get(), false) >= 0 &&
                H5Pset_obj_track_times(dcpl.get(), false) >= 0,
            IoError, path << ": cannot create HDF5 property lists");
  hdf5::Handle file(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, fcpl.get(), access), H5Fclose);
  DST_CHECK(file.ok(), IoError, path << ": cannot create HDF5 file");
  const int64_t columns = a.seq_len + 1;
  write_matrix(file.get(), "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, packed.tokens.data(),
               packed.rows, columns, dcpl.get(), path);
  write_matrix(file.get(), "loss_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, packed.mask.data(),
               packed.rows, columns, dcpl.get(), path);
  const hid_t root = file.get();
  write_string_attribute(root, "format", a.format, path);
  write_int64_attribute(root, "format_version", a.format_version, path);
  write_string_attribute(root, "split", a.split, path);
  write_int64_attribute(root, "shard_index", a.shard_index, path);
  write_string_attribute(root, "content_hash", a.content_hash, path);
  write_int64_attribute(root, "seq_len", a.seq_len, path);
  write_int64_attribute(root, "documents", a.documents, path);
  write_int64_attribute(root, "tokens", a.tokens, path);
  write_int64_attribute(root, "dropped_tail_tokens", a.dropped_tail_tokens, path);
  write_int64_attribute(root, "rows", a.rows, path);
  write_string_attribute(root, "tokenizer_fingerprint", a.tokenizer_fingerprint, path);
  write_int64_attribute(root, "eos_id", a.eos_id, path);
  DST_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL) >= 0, IoError,
            path << ": cannot flush HDF5 file");
  return file;
}

}  // namespace

void write_shard_file(const std::string& path, const PackedShard& packed,
                      const PreparedShardAttributes& a) {
  hdf5::Quiet quiet;
  hdf5::Handle file = create_shard_file(path, H5P_DEFAULT, packed, a, path);
  DST_CHECK(file.close() >= 0, IoError, path << ": cannot close HDF5 file");
}

std::string shard_file_image(const PackedShard& packed, const PreparedShardAttributes& a,
                             const std::string& what) {
  hdf5::Quiet quiet;
  hdf5::Handle access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  DST_CHECK(access.ok() && H5Pset_fapl_core(access.get(), 1 << 20, /*backing_store=*/0) >= 0,
            IoError, what << ": cannot set up an in-memory HDF5 file");
  const hdf5::Handle file =
      create_shard_file("/dev/null/" + what, access.get(), packed, a, what);  // never on disk
  const ssize_t size = H5Fget_file_image(file.get(), nullptr, 0);
  DST_CHECK(size > 0, IoError, what << ": cannot read the in-memory HDF5 image");
  std::string image(static_cast<size_t>(size), '\0');
  DST_CHECK(H5Fget_file_image(file.get(), image.data(), image.size()) == size, IoError,
            what << ": cannot read the in-memory HDF5 image");
  return image;
}

namespace {
constexpr const char* kSealedMembers[] = {"splits", "sources", "counts"};
}  // namespace

nlohmann::json seal_manifest(nlohmann::json manifest, const EncryptionKey& key) {
  static const char* digits = "0123456789abcdef";
  nlohmann::json sealed = nlohmann::json::object();
  for (const char* name : kSealedMembers) {
    sealed[name] = manifest.at(name);
    manifest.erase(name);
  }
  const std::string envelope =
      encrypt_bytes(key, sealed.dump(), kSealedManifestContext, "manifest");
  std::string hex;
  hex.reserve(2 * envelope.size());
  for (unsigned char c : envelope) {
    hex.push_back(digits[c >> 4]);
    hex.push_back(digits[c & 15]);
  }
  manifest["encryption"] = {{"algorithm", "AES-256-GCM"}, {"key_fingerprint", key.fingerprint()}};
  manifest["sealed"] = hex;
  return manifest;
}

nlohmann::json unseal_manifest(nlohmann::json manifest, const EncryptionKey& key,
                               const std::string& what) {
  auto value = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  const nlohmann::json& stored = manifest.at("sealed");
  const std::string hex = stored.is_string() ? stored.get<std::string>() : std::string("?");
  std::string envelope(hex.size() / 2, '\0');
  bool ok = hex.size() % 2 == 0;
  for (size_t i = 0; ok && i < envelope.size(); ++i) {
    const int high = value(hex[2 * i]), low = value(hex[2 * i + 1]);
    ok = high >= 0 && low >= 0;
    envelope[i] = static_cast<char>((high << 4) | low);
  }
  DST_CHECK(ok, DataError, what << ": key 'sealed' is not lowercase hex");
  nlohmann::json sealed;
  try {
    sealed = nlohmann::json::parse(decrypt_bytes(key, envelope, kSealedManifestContext, what));
  } catch (const nlohmann::json::exception& e) {
    DST_THROW(DataError, what << ": the sealed part is not valid JSON (" << e.what() << ")");
  }
  DST_CHECK(sealed.is_object(), DataError, what << ": the sealed part is not a JSON object");
  manifest.erase("sealed");
  manifest.erase("encryption");
  for (auto& [name, member] : sealed.items()) manifest[name] = member;
  return manifest;
}

}  // namespace dst::detail

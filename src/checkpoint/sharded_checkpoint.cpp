#include "deepseek_train/checkpoint/sharded_checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "core/hdf5_io.h"
#include "deepseek_train/checkpoint/piece_geometry.h"
#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"

namespace dst {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kManifest = "manifest.json";
constexpr const char* kFormat = kCheckpointFormat;
constexpr const char* kLatest = "latest";
constexpr const char* kBest = "best";
// How long rank 0 waits for the other ranks' files before giving up on a commit.
constexpr double kCommitTimeoutSeconds = 600.0;

std::string rank_file_name(int rank) {
  std::ostringstream name;
  name << "rank-" << std::setw(5) << std::setfill('0') << rank << ".h5";
  return name.str();
}

std::string step_dir_name(int64_t step) { return "step-" + std::to_string(step); }

// The dataset names of a rank's pieces: "<kind>:<tensor>", with "#<n>" appended to the n-th
// further piece of the same state (a rank may hold several pieces of one tensor).
std::vector<std::string> dataset_names(const std::vector<StatePiece>& pieces) {
  std::map<std::string, int> seen;
  std::vector<std::string> names;
  for (const StatePiece& piece : pieces) {
    const std::string name = piece.kind + ":" + piece.tensor;
    const int repeat = seen[name]++;
    names.push_back(repeat == 0 ? name : name + "#" + std::to_string(repeat));
  }
  return names;
}

// HDF5 memory/file type of a stored dtype (16-bit floats are stored as their raw bits).
hid_t hdf5_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return H5T_NATIVE_FLOAT;
    case at::kBFloat16:
    case at::kHalf:
      return H5T_NATIVE_UINT16;
    case at::kLong:
      return H5T_NATIVE_INT64;
    case at::kByte:
      return H5T_NATIVE_UINT8;
    default:
      DST_THROW(CheckpointError, "checkpoint: unsupported tensor dtype " << type);
  }
}

// The associated data that binds an encrypted file to its name and the tensors it holds.
std::string associated_data(const std::string& file, std::vector<std::string> datasets) {
  std::sort(datasets.begin(), datasets.end());
  std::string aad = std::string(kFormat) + "\n" + file;
  for (const std::string& d : datasets) aad += "\n" + d;
  return aad;
}

json location_json(const PieceLocation& l) {
  return {{"split_dim", l.split_dim},
          {"block_start", l.block_start},
          {"block_length", l.block_length},
          {"begin", l.begin},
          {"end", l.end}};
}

// Variable-length byte strings of every rank, on every rank (collective).
std::vector<std::string> all_gather_strings(comm::Communicator& world, const std::string& mine) {
  const int p = world.size();
  at::Tensor length = at::full({1}, static_cast<int64_t>(mine.size()), at::kLong);
  at::Tensor lengths = at::zeros({p}, at::kLong);
  world.all_gather(lengths, length)->wait();
  int64_t longest = 0;
  for (int r = 0; r < p; ++r) longest = std::max(longest, lengths[r].item<int64_t>());
  at::Tensor own = at::zeros({std::max<int64_t>(longest, 1)}, at::kByte);
  std::memcpy(own.data_ptr(), mine.data(), mine.size());
  at::Tensor all = at::zeros({p * own.numel()}, at::kByte);
  world.all_gather(all, own)->wait();
  std::vector<std::string> result;
  const char* bytes = static_cast<const char*>(all.data_ptr());
  for (int r = 0; r < p; ++r)
    result.emplace_back(bytes + r * own.numel(), static_cast<size_t>(lengths[r].item<int64_t>()));
  return result;
}

void write_hdf5_file(const std::string& path, const std::vector<StatePiece>& pieces) {
  hdf5::Quiet quiet;
  hdf5::Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  DST_CHECK(file.ok(), CheckpointError, path << ": cannot create HDF5 file");
  const std::vector<std::string> names = dataset_names(pieces);
  for (size_t i = 0; i < pieces.size(); ++i) {
    const StatePiece& piece = pieces[i];
    const std::string& name = names[i];
    const hsize_t dims[1] = {static_cast<hsize_t>(piece.data.numel())};
    hdf5::Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
    const hid_t type = hdf5_type(piece.data.scalar_type());
    hdf5::Handle dataset(H5Dcreate2(file.get(), name.c_str(), type, space.get(), H5P_DEFAULT,
                                    H5P_DEFAULT, H5P_DEFAULT),
                         H5Dclose);
    DST_CHECK(dataset.ok(), CheckpointError, path << ": cannot create dataset '" << name << "'");
    DST_CHECK(piece.data.numel() == 0 || H5Dwrite(dataset.get(), type, H5S_ALL, H5S_ALL,
                                                  H5P_DEFAULT, piece.data.data_ptr()) >= 0,
              CheckpointError, path << ": cannot write dataset '" << name << "'");
  }
  DST_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL) >= 0 && file.close() >= 0, CheckpointError,
            path << ": cannot flush HDF5 file");
}

void remove_all_quietly(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

// Removes a committed checkpoint so that no interruption can leave it half deleted under its
// committed name: it is renamed to `<name>.pruned.partial` first (which the next save clears, as
// any leftover `.partial`), then deleted.
void remove_committed_checkpoint(const fs::path& dir) {
  const fs::path doomed = dir.string() + ".pruned.partial";
  std::error_code ec;
  fs::rename(dir, doomed, ec);
  if (!ec) remove_all_quietly(doomed);
}

// Committed checkpoints under root, oldest first.
std::vector<std::pair<int64_t, fs::path>> committed_checkpoints(const fs::path& root) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return found;
  static const std::regex pattern("step-([0-9]+)");
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    std::smatch match;
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(name, match, pattern) &&
        fs::exists(entry.path() / kManifest))
      found.emplace_back(std::stoll(match[1].str()), entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

json info_json(const CheckpointInfo& info) {
  const CheckpointLayout& l = info.layout;
  return {{"step", info.step},
          {"optimizer_steps", info.optimizer_steps},
          {"sampler", info.sampler_state},
          {"loss_scaler",
           {{"scale", info.loss_scale},
            {"clean_steps", info.loss_scaler_clean_steps},
            {"skipped_steps", info.skipped_steps}}},
          {"layout",
           {{"world_size", l.world_size},
            {"dp", l.dp},
            {"tp", l.tp},
            {"pp", l.pp},
            {"zero_stage", l.zero_stage},
            {"virtual_stages", l.virtual_stages}}},
          {"model", json::parse(model_config_to_hf_json(info.model))},
          {"param_dtype", info.param_dtype},
          {"recipe", info.recipe},
          {"library_version", info.library_version},
          {"provenance", info.provenance.empty() ? json() : json::parse(info.provenance)}};
}

}  // namespace

std::string checkpoint_dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    case at::kLong:
      return "int64";
    case at::kByte:
      return "uint8";
    default:
      DST_THROW(CheckpointError, "checkpoint: unsupported tensor dtype " << type);
  }
}

std::optional<at::ScalarType> checkpoint_dtype_from_name(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  if (name == "int64") return at::kLong;
  if (name == "uint8") return at::kByte;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

struct CheckpointWriter::Pending {
  fs::path root;
  fs::path partial;  // step-N.partial: written here, renamed to final when complete
  fs::path final_dir;
  std::string file;  // this rank's data file name
  std::vector<StatePiece> pieces;
  json manifest;  // rank 0: everything but the files' checksums
  std::vector<std::string> files;
  int64_t keep_last = 0;
  int64_t step = 0;
  std::exception_ptr error;
};

CheckpointWriter::CheckpointWriter(comm::CommunicatorPtr world, std::optional<EncryptionKey> key)
    : world_(std::move(world)), key_(std::move(key)) {}

CheckpointWriter::~CheckpointWriter() {
  if (thread_.joinable()) thread_.join();
}

void CheckpointWriter::write_own_file(Pending& job) {
  const fs::path path = job.partial / job.file;
  const std::vector<std::string> datasets = dataset_names(job.pieces);
  write_atomically(path.string(), [&](const std::string& temporary) {
    write_hdf5_file(temporary, job.pieces);
    if (key_) encrypt_file_in_place(*key_, temporary, associated_data(job.file, datasets));
  });
  const int64_t bytes = static_cast<int64_t>(fs::file_size(path));
  // The checksum travels to rank 0 through a small file beside the data (rank 0 may be busy in
  // its own background thread; no collective is needed).
  write_file_atomically((job.partial / (job.file + ".sha256")).string(),
                        sha256_file_hex(path.string()) + " " + std::to_string(bytes) + "\n");
  job.pieces.clear();  // release the host copies
}

namespace {

void commit(const fs::path& partial, const fs::path& final_dir, const fs::path& root, json manifest,
            const std::vector<std::string>& files, int64_t keep_last,
            const std::function<void()>& before_rename) {
  // Wait for every rank's checksum file.
  const auto start = std::chrono::steady_clock::now();
  json file_entries = json::object();
  for (const std::string& file : files) {
    const fs::path sidecar = partial / (file + ".sha256");
    while (!fs::exists(sidecar)) {
      const double waited =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      DST_CHECK(waited < kCommitTimeoutSeconds, CheckpointError,
                partial.string() << ": " << file << " was not written within "
                                 << kCommitTimeoutSeconds << " s; checkpoint not committed");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::ifstream in(sidecar);
    std::string sha;
    int64_t bytes = -1;
    in >> sha >> bytes;
    DST_CHECK(sha.size() == 64 && bytes >= 0, CheckpointError,
              sidecar.string() << ": malformed checksum file");
    file_entries[file] = {{"sha256", sha}, {"bytes", bytes}};
    fs::remove(sidecar);
  }
  manifest["files"] = file_entries;
  write_file_atomically((partial / kManifest).string(), manifest.dump(1) + "\n");
  if (before_rename) before_rename();
  // Commit: the directory appears under its final name complete, then `latest` points to it.
  std::error_code ec;
  if (fs::exists(final_dir)) {
    const fs::path old = final_dir.string() + ".replaced";
    remove_all_quietly(old);
    fs::rename(final_dir, old, ec);
    DST_CHECK(!ec, IoError, "cannot move '" << final_dir.string() << "' aside: " << ec.message());
    fs::rename(partial, final_dir, ec);
    remove_all_quietly(old);
  } else {
    fs::rename(partial, final_dir, ec);
  }
  DST_CHECK(!ec, IoError,
            "cannot rename '" << partial.string() << "' to '" << final_dir.string()
                              << "': " << ec.message());
  write_file_atomically((root / kLatest).string(), final_dir.filename().string() + "\n");
  if (keep_last > 0) {
    std::string best;
    std::ifstream(root / kBest) >> best;
    auto committed = committed_checkpoints(root);
    for (size_t i = 0; i + keep_last < committed.size(); ++i)
      if (committed[i].second != final_dir && committed[i].second.filename() != best)
        remove_committed_checkpoint(committed[i].second);
  }
}

}  // namespace

std::string CheckpointWriter::save(const std::string& root_dir, const CheckpointInfo& info,
                                   std::vector<StatePiece> pieces, bool async, int64_t keep_last) {
  wait();
  auto job = std::make_unique<Pending>();
  job->root = root_dir;
  job->final_dir = job->root / step_dir_name(info.step);
  job->partial = job->root / (step_dir_name(info.step) + ".partial");
  job->file = rank_file_name(world_->rank());
  job->keep_last = keep_last;
  job->step = info.step;
  // Host copies first: training may change the originals as soon as this returns.
  for (StatePiece& piece : pieces) {
    piece.data = piece.data.detach().to(at::kCPU).contiguous().clone().view({-1});
    DST_ASSERT(piece.data.numel() == piece.location.end - piece.location.begin,
               "piece " << piece.tensor << " holds " << piece.data.numel() << " elements");
  }
  job->pieces = std::move(pieces);

  // Every rank's piece descriptions reach rank 0, which writes them into the manifest.
  json mine = json::array();
  const std::vector<std::string> datasets = dataset_names(job->pieces);
  for (size_t i = 0; i < job->pieces.size(); ++i) {
    const StatePiece& piece = job->pieces[i];
    mine.push_back({{"tensor", piece.tensor},
                    {"kind", piece.kind},
                    {"shape", piece.global_shape},
                    {"dtype", checkpoint_dtype_name(piece.data.scalar_type())},
                    {"file", job->file},
                    {"dataset", datasets[i]},
                    {"location", location_json(piece.location)}});
  }
  const std::vector<std::string> all = all_gather_strings(*world_, mine.dump());
  if (world_->rank() == 0) {
    // Leftovers of interrupted saves are never committed: remove them.
    std::error_code ec;
    if (fs::is_directory(job->root, ec))
      for (const auto& entry : fs::directory_iterator(job->root, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.size() > 8 && name.compare(name.size() - 8, 8, ".partial") == 0)
          remove_all_quietly(entry.path());
      }
    fs::create_directories(job->partial, ec);
    DST_CHECK(
        !ec, IoError,
        "cannot create checkpoint directory '" << job->partial.string() << "': " << ec.message());
    json manifest = {{"format", kFormat}};
    manifest.update(info_json(info));
    if (key_)
      manifest["encryption"] = {{"cipher", "AES-256-GCM"},
                                {"key_fingerprint", key_->fingerprint()}};
    json tensors = json::object();
    for (int r = 0; r < world_->size(); ++r) {
      job->files.push_back(rank_file_name(r));
      const json pieces = json::parse(all[r]);
      for (const json& piece : pieces) {
        json& entry = tensors[piece["tensor"].get<std::string>()];
        entry["shape"] = piece["shape"];
        json& state = entry["states"][piece["kind"].get<std::string>()];
        state["dtype"] = piece["dtype"];
        json located = piece["location"];
        located["file"] = piece["file"];
        located["dataset"] = piece["dataset"];
        state["pieces"].push_back(located);
      }
    }
    manifest["tensors"] = tensors;
    job->manifest = std::move(manifest);
  }
  world_->barrier()->wait();  // the directory exists for everyone

  auto work = [this, raw = job.get()] {
    try {
      write_own_file(*raw);
      if (fault_hook_) fault_hook_(raw->step, "save");
      std::function<void()> before_rename;
      if (fault_hook_) before_rename = [this, raw] { fault_hook_(raw->step, "commit"); };
      if (world_->rank() == 0)
        commit(raw->partial, raw->final_dir, raw->root, raw->manifest, raw->files, raw->keep_last,
               before_rename);
    } catch (...) {
      raw->error = std::current_exception();
    }
  };
  const std::string final_dir = job->final_dir.string();
  pending_ = std::move(job);
  if (async) {
    thread_ = std::thread(work);
  } else {
    work();
    wait();
  }
  return final_dir;
}

void CheckpointWriter::wait() {
  if (!pending_) return;
  if (thread_.joinable()) thread_.join();
  std::exception_ptr error = pending_->error;
  pending_.reset();
  // Every rank learns whether any rank failed, so all of them throw or none does.
  at::Tensor failed = at::full({1}, error ? 1.0 : 0.0, at::kDouble);
  world_->all_reduce(failed, comm::ReduceOp::kMax)->wait();
  if (error) std::rethrow_exception(error);
  DST_CHECK(failed.item<double>() == 0.0, CheckpointError,
            "checkpoint save failed on another rank (see its log); the previous checkpoint is "
            "unchanged");
}

void mark_best_checkpoint(const std::string& root, const std::string& directory) {
  write_file_atomically((fs::path(root) / kBest).string(),
                        fs::path(directory).filename().string() + "\n");
}

std::string resolve_checkpoint(const std::string& root, const std::string& which) {
  if (which != kLatest && which != kBest) {
    DST_CHECK(fs::exists(fs::path(which) / kManifest), CheckpointError,
              which << ": not a checkpoint directory (no " << kManifest << ")");
    return which;
  }
  const fs::path pointer = fs::path(root) / which;
  std::ifstream in(pointer);
  DST_CHECK(in.good(), CheckpointError,
            root << ": no checkpoint to resume from (no '" << which << "' file)");
  std::string name;
  in >> name;
  const fs::path directory = fs::path(root) / name;
  DST_CHECK(
      !name.empty() && fs::exists(directory / kManifest), CheckpointError,
      pointer.string() << ": points to '" << name << "', which is not a committed checkpoint");
  return directory.string();
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

struct CheckpointReader::OpenFile {
  hdf5::Handle file;
};

struct CheckpointReader::StoredPiece {
  PieceLocation location;
  std::string file;
  std::string dataset;
};

struct CheckpointReader::TensorEntry {
  std::vector<int64_t> shape;
  struct State {
    at::ScalarType dtype = at::kFloat;
    std::vector<StoredPiece> pieces;
  };
  std::map<std::string, State> states;
};

CheckpointReader::CheckpointReader(const std::string& directory, std::optional<EncryptionKey> key)
    : directory_(directory), key_(std::move(key)) {
  const std::string path = (fs::path(directory) / kManifest).string();
  std::ifstream in(path);
  DST_CHECK(in.good(), CheckpointError, path << ": cannot open checkpoint manifest");
  std::ostringstream text;
  text << in.rdbuf();
  DST_CHECK(!in.bad(), CheckpointError, path << ": cannot read checkpoint manifest");
  CheckpointManifest manifest = parse_checkpoint_manifest(text.str(), path);
  info_ = std::move(manifest.info);
  encrypted_ = manifest.encryption.has_value();
  if (encrypted_) {
    DST_CHECK(key_.has_value(), CheckpointError,
              directory << ": the checkpoint is encrypted; set checkpoint.encryption.key_file or "
                           "checkpoint.encryption.key_env");
    const std::string& expected = manifest.encryption->key_fingerprint;
    DST_CHECK(key_->fingerprint() == expected, CheckpointError,
              directory << ": wrong encryption key (its fingerprint " << key_->fingerprint()
                        << " is not the checkpoint's " << expected << ")");
  }
  for (const auto& [file, entry] : manifest.files) {
    file_sha256_[file] = entry.sha256;
    file_bytes_[file] = entry.bytes;
  }
  for (auto& [name, entry] : manifest.tensors) {
    auto tensor = std::make_unique<TensorEntry>();
    tensor->shape = std::move(entry.shape);
    for (auto& [kind, manifest_state] : entry.states) {
      TensorEntry::State state;
      const auto dtype = checkpoint_dtype_from_name(manifest_state.dtype);
      DST_ASSERT(dtype.has_value(),
                 "parse_checkpoint_manifest accepted dtype '" << manifest_state.dtype << "'");
      state.dtype = *dtype;
      for (ManifestPiece& piece : manifest_state.pieces)
        state.pieces.push_back({piece.location, std::move(piece.file), std::move(piece.dataset)});
      tensor->states.emplace(kind, std::move(state));
    }
    tensors_.emplace(name, std::move(tensor));
  }
}

CheckpointReader::~CheckpointReader() = default;

std::vector<std::string> CheckpointReader::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& item : tensors_) names.push_back(item.first);
  return names;
}

bool CheckpointReader::has(const std::string& tensor, const std::string& kind) const {
  auto it = tensors_.find(tensor);
  return it != tensors_.end() && it->second->states.count(kind) == 1;
}

std::vector<int64_t> CheckpointReader::global_shape(const std::string& tensor) const {
  auto it = tensors_.find(tensor);
  DST_CHECK(it != tensors_.end(), CheckpointError,
            directory_ << ": the checkpoint has no tensor '" << tensor << "'");
  return it->second->shape;
}

std::string CheckpointReader::dtype(const std::string& tensor, const std::string& kind) const {
  DST_CHECK(has(tensor, kind), CheckpointError,
            directory_ << ": the checkpoint has no " << kind << " of tensor '" << tensor << "'");
  return checkpoint_dtype_name(tensors_.at(tensor)->states.at(kind).dtype);
}

CheckpointReader::OpenFile& CheckpointReader::open(const std::string& file) {
  auto it = open_files_.find(file);
  if (it != open_files_.end()) return *it->second;
  const std::string path = (fs::path(directory_) / file).string();
  std::error_code ec;
  const auto bytes = fs::file_size(path, ec);
  DST_CHECK(!ec, CheckpointError,
            path << ": missing (the manifest lists it as holding checkpoint tensors)");
  const int64_t expected_bytes = file_bytes_.at(file);
  DST_CHECK(static_cast<int64_t>(bytes) == expected_bytes, CheckpointError,
            path << ": truncated or extended: " << bytes << " bytes, the manifest says "
                 << expected_bytes);
  auto open_file = std::make_unique<OpenFile>();
  hdf5::Quiet quiet;
  if (encrypted_) {
    open_encrypted_image(file, path, *open_file);
  } else {
    // Hashed while streaming, then read in place: only the hyperslabs asked for enter memory.
    DST_CHECK(sha256_file_hex(path) == file_sha256_.at(file), CheckpointError,
              path << ": checksum mismatch (the file was modified or corrupted)");
    open_file->file = hdf5::Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  }
  DST_CHECK(open_file->file.ok(), CheckpointError, path << ": not a readable HDF5 file");
  return *open_files_.emplace(file, std::move(open_file)).first->second;
}

// An encrypted file is authenticated as a whole, so it is read, checked and decrypted whole and
// opened as an in-memory HDF5 image (HDF5 copies the image).
void CheckpointReader::open_encrypted_image(const std::string& file, const std::string& path,
                                            OpenFile& into) const {
  const std::string bytes = read_file_bytes(path);
  DST_CHECK(sha256_hex(bytes) == file_sha256_.at(file), CheckpointError,
            path << ": checksum mismatch (the file was modified or corrupted)");
  std::vector<std::string> datasets;
  for (const auto& [name, tensor] : tensors_)
    for (const auto& [kind, state] : tensor->states)
      for (const auto& piece : state.pieces)
        if (piece.file == file) datasets.push_back(piece.dataset);
  const std::string image = decrypt_bytes(*key_, bytes, associated_data(file, datasets), path);
  hdf5::Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  DST_CHECK(fapl.ok() && H5Pset_fapl_core(fapl.get(), 1 << 20, 0) >= 0 &&
                H5Pset_file_image(fapl.get(), const_cast<char*>(image.data()), image.size()) >= 0,
            CheckpointError, path << ": cannot prepare the HDF5 file image");
  // The core driver refuses a name that exists on disk: the image gets a name of its own.
  const std::string image_name = "deepseek_train-memory-image:" + path;
  into.file = hdf5::Handle(H5Fopen(image_name.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
}

namespace {

// Reads `count` elements from `offset` of a 1-D dataset into `into`.
bool read_elements(hid_t dataset, hid_t file_space, hid_t type, int64_t offset, int64_t count,
                   void* into) {
  if (count == 0) return true;
  const hsize_t start[1] = {static_cast<hsize_t>(offset)};
  const hsize_t size[1] = {static_cast<hsize_t>(count)};
  if (H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, size, nullptr) < 0)
    return false;
  hdf5::Handle memory(H5Screate_simple(1, size, nullptr), H5Sclose);
  return memory.ok() && H5Dread(dataset, type, memory.get(), file_space, H5P_DEFAULT, into) >= 0;
}

void* element_address(at::Tensor& tensor, int64_t offset) {
  return static_cast<char*>(tensor.data_ptr()) + offset * tensor.element_size();
}

}  // namespace

void CheckpointReader::read_runs(const std::string& tensor, const StoredPiece& piece,
                                 const std::vector<OverlapRun>& runs, at::Tensor& into) {
  OpenFile& file = open(piece.file);
  const std::string path = (fs::path(directory_) / piece.file).string();
  const int64_t count = piece.location.end - piece.location.begin;
  hdf5::Quiet quiet;
  hdf5::Handle dataset(H5Dopen2(file.file.get(), piece.dataset.c_str(), H5P_DEFAULT), H5Dclose);
  DST_CHECK(dataset.ok(), CheckpointError,
            path << ": no dataset '" << piece.dataset << "' (tensor '" << tensor << "')");
  hdf5::Handle space(H5Dget_space(dataset.get()), H5Sclose);
  hsize_t stored = 0;
  DST_CHECK(space.ok() && H5Sget_simple_extent_ndims(space.get()) == 1 &&
                H5Sget_simple_extent_dims(space.get(), &stored, nullptr) == 1 &&
                static_cast<int64_t>(stored) == count,
            CheckpointError,
            path << ": dataset '" << piece.dataset << "' holds " << stored
                 << " elements, the manifest says " << count);
  const hid_t type = hdf5_type(into.scalar_type());
  const int64_t window = std::max<int64_t>(1, read_window_bytes_ / into.element_size());
  // Runs close together are read as one window of the piece and copied out; a run on its own is
  // read straight into place.
  for (size_t first = 0; first < runs.size();) {
    const int64_t start = runs[first].piece_offset;
    size_t next = first + 1;
    while (next < runs.size() && runs[next].piece_offset + runs[next].length - start <= window)
      ++next;
    bool ok = true;
    if (next == first + 1) {
      ok = read_elements(dataset.get(), space.get(), type, start, runs[first].length,
                         element_address(into, runs[first].wanted_offset));
    } else {
      const int64_t span = runs[next - 1].piece_offset + runs[next - 1].length - start;
      at::Tensor buffer = at::empty({span}, into.options());
      ok = read_elements(dataset.get(), space.get(), type, start, span, buffer.data_ptr());
      for (size_t r = first; ok && r < next; ++r)
        into.narrow(0, runs[r].wanted_offset, runs[r].length)
            .copy_(buffer.narrow(0, runs[r].piece_offset - start, runs[r].length));
    }
    DST_CHECK(ok, CheckpointError, path << ": cannot read dataset '" << piece.dataset << "'");
    first = next;
  }
}

at::Tensor CheckpointReader::read(const std::string& tensor, const std::string& kind,
                                  const PieceLocation& want) {
  DST_CHECK(has(tensor, kind), CheckpointError,
            directory_ << "/" << kManifest << ": no file holds the " << kind << " of tensor '"
                       << tensor << "'");
  const TensorEntry& entry = *tensors_.at(tensor);
  const TensorEntry::State& state = entry.states.at(kind);
  const int dims = static_cast<int>(entry.shape.size());
  DST_CHECK(want.split_dim < dims, CheckpointError,
            directory_ << ": tensor '" << tensor << "' has " << dims << " dimensions, the model "
                       << "splits dimension " << want.split_dim);
  // Blocks are laid out in the padded extent: the largest any holder (or the reader) uses.
  std::vector<int64_t> extent = entry.shape;
  auto widen = [&extent](const PieceLocation& l) {
    if (l.split_dim >= 0)
      extent[l.split_dim] = std::max(extent[l.split_dim], l.block_start + l.block_length);
  };
  for (const auto& piece : state.pieces) widen(piece.location);
  widen(want);
  DST_CHECK(want.begin >= 0 && want.begin <= want.end && want.end <= block_elements(want, extent),
            CheckpointError,
            directory_ << ": tensor '" << tensor << "' of shape " << at::IntArrayRef(entry.shape)
                       << " does not match the model (asked for elements [" << want.begin << ", "
                       << want.end << ") of a block of " << block_elements(want, extent) << ")");
  // Padding reads as zero; every other wanted element must come from some piece.
  at::Tensor values = at::zeros({want.end - want.begin}, at::TensorOptions().dtype(state.dtype));
  at::Tensor missing = at::zeros({want.end - want.begin}, at::kBool);
  for (const OverlapRun& run : unpadded_runs(want, entry.shape, extent))
    missing.narrow(0, run.wanted_offset, run.length).fill_(true);
  for (const auto& piece : state.pieces) {
    const PieceLocation& l = piece.location;
    DST_CHECK(l.end <= block_elements(l, extent), CheckpointError,
              (fs::path(directory_) / piece.file).string()
                  << ": piece of tensor '" << tensor << "' ends at element " << l.end
                  << " of a block of " << block_elements(l, extent));
    const std::vector<OverlapRun> runs = overlap_runs(want, l, entry.shape, extent);
    if (runs.empty()) continue;
    read_runs(tensor, piece, runs, values);
    for (const OverlapRun& run : runs)
      missing.narrow(0, run.wanted_offset, run.length).fill_(false);
  }
  DST_CHECK(!missing.any().item<bool>(), CheckpointError,
            directory_ << "/" << kManifest << ": part of the " << kind << " of tensor '" << tensor
                       << "' is held by no file");
  return values;
}

at::Tensor CheckpointReader::read_full(const std::string& tensor, const std::string& kind) {
  const std::vector<int64_t> shape = global_shape(tensor);
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  PieceLocation whole;
  whole.end = numel;
  return read(tensor, kind, whole).view(shape);
}

std::vector<CheckpointReader::FileStatus> CheckpointReader::verify_files() const {
  std::vector<FileStatus> result;
  for (const auto& [file, sha] : file_sha256_) {
    FileStatus status;
    status.name = file;
    const std::string path = (fs::path(directory_) / file).string();
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      status.error = "missing";
    } else {
      status.bytes = static_cast<int64_t>(fs::file_size(path, ec));
      if (status.bytes != file_bytes_.at(file)) {
        status.error = "size " + std::to_string(status.bytes) + " bytes, the manifest says " +
                       std::to_string(file_bytes_.at(file));
      } else {
        status.checksum_ok = sha256_file_hex(path) == sha;
        if (!status.checksum_ok) status.error = "checksum mismatch";
      }
    }
    result.push_back(status);
  }
  return result;
}

std::string CheckpointReader::describe() const {
  std::ostringstream out;
  const CheckpointLayout& l = info_.layout;
  out << "checkpoint " << directory_ << "\n"
      << "  step " << info_.step << ", optimizer steps " << info_.optimizer_steps << ", sampler "
      << info_.sampler_state << ", loss scale " << info_.loss_scale << "\n"
      << "  layout: world " << l.world_size << " = dp " << l.dp << " x tp " << l.tp << " x pp "
      << l.pp << ", ZeRO stage " << l.zero_stage << ", virtual stages " << l.virtual_stages << "\n"
      << "  model: " << info_.model.num_hidden_layers << " layers, hidden "
      << info_.model.hidden_size << ", vocab " << info_.model.vocab_size << ", "
      << info_.model.num_parameters() << " parameters; parameter dtype " << info_.param_dtype
      << "\n"
      << "  library " << info_.library_version << (encrypted_ ? ", encrypted (AES-256-GCM)" : "")
      << "\n";
  if (!info_.provenance.empty()) {  // train/provenance.h
    const json provenance = json::parse(info_.provenance);
    out << "  provenance: source commit " << provenance.value("source_commit", std::string("?"))
        << "\n";
    for (const json& input : provenance.value("inputs", json::array()))
      out << "    " << input.value("role", std::string()) << " "
          << input.value("path", std::string()) << " sha256 "
          << input.value("sha256", std::string()) << "\n";
    if (provenance.contains("privacy")) {
      const json& privacy = provenance.at("privacy");
      out << "    privacy: DP-SGD epsilon " << privacy.value("epsilon", 0.0) << " at delta "
          << privacy.value("delta", 0.0) << " after " << privacy.value("steps", 0)
          << " steps (noise multiplier " << privacy.value("noise_multiplier", 0.0)
          << ", max_grad_norm " << privacy.value("max_grad_norm", 0.0) << ", sample rate "
          << privacy.value("sample_rate", 0.0) << ", " << privacy.value("sampling", std::string())
          << " sampling)\n";
    }
  }
  int64_t total = 0;
  for (const auto& [file, bytes] : file_bytes_) total += bytes;
  out << "  " << file_bytes_.size() << " files, " << total << " bytes; " << tensors_.size()
      << " tensors\n";
  for (const auto& [name, entry] : tensors_) {
    out << "    " << name << " " << at::IntArrayRef(entry->shape) << ":";
    for (const auto& [kind, state] : entry->states)
      out << " " << kind << "(" << checkpoint_dtype_name(state.dtype) << ", " << state.pieces.size()
          << " pieces)";
    out << "\n";
  }
  return out.str();
}

}  // namespace dst

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

std::string dataset_name(const std::string& kind, const std::string& tensor) {
  return kind + ":" + tensor;
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
  for (const StatePiece& piece : pieces) {
    const std::string name = dataset_name(piece.kind, piece.tensor);
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
          {"library_version", info.library_version}};
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
  std::vector<std::string> datasets;
  for (const StatePiece& piece : job.pieces)
    datasets.push_back(dataset_name(piece.kind, piece.tensor));
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
  for (const StatePiece& piece : job->pieces) {
    mine.push_back({{"tensor", piece.tensor},
                    {"kind", piece.kind},
                    {"shape", piece.global_shape},
                    {"dtype", checkpoint_dtype_name(piece.data.scalar_type())},
                    {"file", job->file},
                    {"dataset", dataset_name(piece.kind, piece.tensor)},
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
  std::string image;  // decrypted bytes (kept alive while the file is open)
};

struct CheckpointReader::TensorEntry {
  std::vector<int64_t> shape;
  struct State {
    at::ScalarType dtype = at::kFloat;
    struct Piece {
      PieceLocation location;
      std::string file;
      std::string dataset;
    };
    std::vector<Piece> pieces;
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
  DST_CHECK(fs::exists(path), CheckpointError,
            path << ": missing (the manifest lists it as holding checkpoint tensors)");
  std::string bytes = read_file_bytes(path);
  const int64_t expected_bytes = file_bytes_.at(file);
  DST_CHECK(static_cast<int64_t>(bytes.size()) == expected_bytes, CheckpointError,
            path << ": truncated or extended: " << bytes.size() << " bytes, the manifest says "
                 << expected_bytes);
  DST_CHECK(sha256_hex(bytes) == file_sha256_.at(file), CheckpointError,
            path << ": checksum mismatch (the file was modified or corrupted)");
  auto open_file = std::make_unique<OpenFile>();
  hdf5::Quiet quiet;
  if (encrypted_) {
    std::vector<std::string> datasets;
    for (const auto& [name, tensor] : tensors_)
      for (const auto& [kind, state] : tensor->states)
        for (const auto& piece : state.pieces)
          if (piece.file == file) datasets.push_back(piece.dataset);
    open_file->image = decrypt_bytes(*key_, bytes, associated_data(file, datasets), path);
  } else {
    open_file->image = std::move(bytes);
  }
  hdf5::Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  DST_CHECK(
      fapl.ok() && H5Pset_fapl_core(fapl.get(), 1 << 20, 0) >= 0 &&
          H5Pset_file_image(fapl.get(), open_file->image.data(), open_file->image.size()) >= 0,
      CheckpointError, path << ": cannot prepare the HDF5 file image");
  // The core driver refuses a name that exists on disk: the image gets a name of its own.
  const std::string image_name = "deepseek_train-memory-image:" + path;
  open_file->file = hdf5::Handle(H5Fopen(image_name.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  DST_CHECK(open_file->file.ok(), CheckpointError, path << ": not a readable HDF5 file");
  open_file->image.clear();  // HDF5 copied the image
  open_file->image.shrink_to_fit();
  return *open_files_.emplace(file, std::move(open_file)).first->second;
}

namespace {

// Bounding box (per dimension [lo, hi)) of a piece in global (padded) coordinates.
std::vector<std::pair<int64_t, int64_t>> bounding_box(const PieceLocation& l,
                                                      const std::vector<int64_t>& extent) {
  std::vector<std::pair<int64_t, int64_t>> box;
  for (int64_t e : extent) box.emplace_back(0, e);
  if (box.empty()) return box;
  std::vector<int64_t> block = extent;
  if (l.split_dim >= 0) {
    box[l.split_dim] = {l.block_start, l.block_start + l.block_length};
    block[l.split_dim] = l.block_length;
  }
  int64_t row = 1;
  for (size_t d = 1; d < block.size(); ++d) row *= block[d];
  if (row > 0 && l.end > l.begin) {
    const int64_t first = l.begin / row, last = (l.end + row - 1) / row;
    const int64_t offset = l.split_dim == 0 ? l.block_start : 0;
    box[0] = {std::max(box[0].first, offset + first), std::min(box[0].second, offset + last)};
  }
  return box;
}

bool boxes_overlap(const std::vector<std::pair<int64_t, int64_t>>& a,
                   const std::vector<std::pair<int64_t, int64_t>>& b) {
  for (size_t d = 0; d < a.size(); ++d)
    if (std::max(a[d].first, b[d].first) >= std::min(a[d].second, b[d].second)) return false;
  return true;
}

// Writes `values` (flat) into the flat range [begin, end) of `block` (a view of the full tensor).
void scatter_into_block(at::Tensor block, int64_t begin, int64_t end, const at::Tensor& values) {
  if (block.is_contiguous()) {
    block.view({-1}).slice(0, begin, end).copy_(values);
    return;
  }
  at::Tensor dense = block.contiguous();
  dense.view({-1}).slice(0, begin, end).copy_(values);
  block.copy_(dense);
}

}  // namespace

at::Tensor CheckpointReader::read(const std::string& tensor, const std::string& kind,
                                  const PieceLocation& want) {
  DST_CHECK(has(tensor, kind), CheckpointError,
            directory_ << "/" << kManifest << ": no file holds the " << kind << " of tensor '"
                       << tensor << "'");
  const TensorEntry& entry = *tensors_.at(tensor);
  const TensorEntry::State& state = entry.states.at(kind);
  std::vector<int64_t> extent = entry.shape;
  const int dims = static_cast<int>(extent.size());
  DST_CHECK(want.split_dim < dims, CheckpointError,
            directory_ << ": tensor '" << tensor << "' has " << dims << " dimensions, the model "
                       << "splits dimension " << want.split_dim);
  for (const auto& piece : state.pieces)
    if (piece.location.split_dim >= 0)
      extent[piece.location.split_dim] =
          std::max(extent[piece.location.split_dim],
                   piece.location.block_start + piece.location.block_length);
  if (want.split_dim >= 0)
    extent[want.split_dim] = std::max(extent[want.split_dim], want.block_start + want.block_length);

  at::Tensor full = at::zeros(extent, at::TensorOptions().dtype(state.dtype));
  at::Tensor filled = at::zeros(extent, at::kBool);
  // Positions past the global size (padding) are zero by definition.
  for (int d = 0; d < dims; ++d)
    if (extent[d] > entry.shape[d])
      filled.narrow(d, entry.shape[d], extent[d] - entry.shape[d]).fill_(true);

  const auto wanted_box = bounding_box(want, extent);
  for (const auto& piece : state.pieces) {
    if (!boxes_overlap(bounding_box(piece.location, extent), wanted_box)) continue;
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
    at::Tensor values = at::empty({count}, at::TensorOptions().dtype(state.dtype));
    DST_CHECK(count == 0 || H5Dread(dataset.get(), hdf5_type(state.dtype), H5S_ALL, H5S_ALL,
                                    H5P_DEFAULT, values.data_ptr()) >= 0,
              CheckpointError, path << ": cannot read dataset '" << piece.dataset << "'");
    const PieceLocation& l = piece.location;
    at::Tensor block =
        l.split_dim >= 0 ? full.narrow(l.split_dim, l.block_start, l.block_length) : full;
    at::Tensor block_filled =
        l.split_dim >= 0 ? filled.narrow(l.split_dim, l.block_start, l.block_length) : filled;
    DST_CHECK(l.end <= block.numel(), CheckpointError,
              path << ": piece of tensor '" << tensor << "' ends at element " << l.end
                   << " of a block of " << block.numel());
    scatter_into_block(block, l.begin, l.end, values);
    scatter_into_block(block_filled, l.begin, l.end, at::ones({count}, at::kBool));
  }
  for (int d = 0; d < dims; ++d)
    if (extent[d] > entry.shape[d])
      full.narrow(d, entry.shape[d], extent[d] - entry.shape[d]).zero_();

  at::Tensor region =
      want.split_dim >= 0 ? full.narrow(want.split_dim, want.block_start, want.block_length) : full;
  at::Tensor region_filled =
      want.split_dim >= 0 ? filled.narrow(want.split_dim, want.block_start, want.block_length)
                          : filled;
  DST_CHECK(want.begin >= 0 && want.begin <= want.end && want.end <= region.numel(),
            CheckpointError,
            directory_ << ": tensor '" << tensor << "' of shape " << at::IntArrayRef(entry.shape)
                       << " does not match the model (asked for elements [" << want.begin << ", "
                       << want.end << ") of a block of " << region.numel() << ")");
  at::Tensor values = region.contiguous().view({-1}).slice(0, want.begin, want.end).clone();
  const bool complete =
      region_filled.contiguous().view({-1}).slice(0, want.begin, want.end).all().item<bool>();
  DST_CHECK(complete, CheckpointError,
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

// Sharded, reshardable training checkpoints. Each rank writes the state it owns (its tensor-
// parallel block of a parameter, or the ZeRO shard of that block) into its own HDF5 file under
// <root>/step-N/; rank 0 writes manifest.json naming, for every tensor, its global shape and dtype
// and the slice each file holds, plus the layout, the model, the recipe and a SHA-256 of every
// file. A save is committed by renaming the directory and then updating <root>/latest, so a crash
// at any moment leaves the previous checkpoint loadable. Any rank of any layout reads back exactly
// the slices it needs (CheckpointReader::read), which is what makes resharding on load work.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "deepseek_train/checkpoint/checkpoint_manifest.h"
#include "deepseek_train/checkpoint/piece_geometry.h"
#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/core/crypto.h"
#include "deepseek_train/model/model_config.h"

namespace dst {

// One piece of state a rank saves (a rank may save several pieces of one tensor).
struct StatePiece {
  std::string tensor;  // global name (Hugging Face parameter name, or e.g. "rng/rank-00003")
  std::string kind;    // "master", "exp_avg", "exp_avg_sq", "param", "rng"
  std::vector<int64_t> global_shape;  // unpadded
  PieceLocation location;
  at::Tensor data;  // 1-D, end - begin elements
};

// Dtype names used in manifests ("float32", "bfloat16", "float16", "int64", "uint8").
std::string checkpoint_dtype_name(at::ScalarType type);
// The dtype of such a name; nullopt when unknown.
std::optional<at::ScalarType> checkpoint_dtype_from_name(const std::string& name);

// Resolves `which` ("latest", "best" or a directory) against the checkpoint root: "latest" reads
// <root>/latest, "best" <root>/best. Throws CheckpointError naming the root when there is no
// such checkpoint.
std::string resolve_checkpoint(const std::string& root, const std::string& which);

// Points <root>/best at the committed checkpoint `directory` (atomically); keep_last pruning
// never removes the checkpoint it names.
void mark_best_checkpoint(const std::string& root, const std::string& directory);

// Writes checkpoints; one per process, used collectively by every rank of `world`.
class CheckpointWriter {
 public:
  CheckpointWriter(comm::CommunicatorPtr world, std::optional<EncryptionKey> key);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Collective. Copies the pieces to host memory and writes <root>/step-<info.step>: in this call
  // (async = false) or in a background thread (the next save() or wait() waits for it). Keeps
  // the newest keep_last committed checkpoints (0: all). Returns the final directory.
  std::string save(const std::string& root, const CheckpointInfo& info,
                   std::vector<StatePiece> pieces, bool async, int64_t keep_last);
  // Collective: waits for a background save to be committed everywhere; rethrows its error.
  void wait();
  // Called with "save" after this rank's file of a checkpoint is written and with "commit" on
  // rank 0 after the manifest is written, before the directory is renamed into place (tests
  // inject faults there; core/fault_injection.h). Receives the checkpoint's step.
  using FaultHook = std::function<void(int64_t step, const char* point)>;
  void set_fault_hook(FaultHook hook) { fault_hook_ = std::move(hook); }

 private:
  struct Pending;
  FaultHook fault_hook_;
  void write_own_file(Pending& job);
  comm::CommunicatorPtr world_;
  std::optional<EncryptionKey> key_;
  std::unique_ptr<Pending> pending_;
  std::thread thread_;
};

// Reads a committed checkpoint directory. Validates the manifest on construction; verifies each
// data file's SHA-256 (streaming) the first time it is opened. read() takes from each stored
// piece only the hyperslabs that overlap the wanted range, in windows of at most
// read_window_bytes, so a rank never holds more of a tensor than its own slice plus one window.
// Encrypted files are authenticated whole, so they are decrypted into memory whole.
// Every error is a one-line CheckpointError naming the file and the tensor or offset.
class CheckpointReader {
 public:
  CheckpointReader(const std::string& directory, std::optional<EncryptionKey> key);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::string& directory() const { return directory_; }
  const CheckpointInfo& info() const { return info_; }
  bool encrypted() const { return encrypted_; }
  std::vector<std::string> tensor_names() const;
  bool has(const std::string& tensor, const std::string& kind) const;
  std::vector<int64_t> global_shape(const std::string& tensor) const;
  std::string dtype(const std::string& tensor, const std::string& kind) const;

  // The elements `want` describes of `kind` of `tensor` (the block is `want.block_length` along
  // want.split_dim with the other dimensions global; positions past the global size read as 0),
  // assembled from the pieces that overlap it, in the stored dtype.
  at::Tensor read(const std::string& tensor, const std::string& kind, const PieceLocation& want);
  // The whole tensor.
  at::Tensor read_full(const std::string& tensor, const std::string& kind);
  // The most bytes read() buffers at once to collect runs close together in a piece (default
  // 64 MiB); a run longer than that is read straight into the result.
  void set_read_window_bytes(int64_t bytes) { read_window_bytes_ = bytes; }

  // Data files with their size and whether their checksum matches (reads every file).
  struct FileStatus {
    std::string name;
    int64_t bytes = 0;
    bool checksum_ok = false;
    std::string error;
  };
  std::vector<FileStatus> verify_files() const;
  // Human-readable summary for `dstrain ckpt inspect`.
  std::string describe() const;

 private:
  struct OpenFile;
  struct StoredPiece;
  struct TensorEntry;
  OpenFile& open(const std::string& file);
  void open_encrypted_image(const std::string& file, const std::string& path, OpenFile& into) const;
  void read_runs(const std::string& tensor, const StoredPiece& piece,
                 const std::vector<OverlapRun>& runs, at::Tensor& into);
  std::string directory_;
  std::optional<EncryptionKey> key_;
  CheckpointInfo info_;
  bool encrypted_ = false;
  std::map<std::string, std::string> file_sha256_;
  std::map<std::string, int64_t> file_bytes_;
  std::map<std::string, std::unique_ptr<TensorEntry>> tensors_;
  std::map<std::string, std::unique_ptr<OpenFile>> open_files_;
  int64_t read_window_bytes_ = int64_t{64} << 20;
};

}  // namespace dst

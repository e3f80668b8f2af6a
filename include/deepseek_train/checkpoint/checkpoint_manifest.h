// The manifest.json of a sharded checkpoint (checkpoint/sharded_checkpoint.h): what it describes
// and its strict parser. Torch-free, so it can be tested and fuzzed without libtorch;
// CheckpointReader reads manifests only through parse_checkpoint_manifest.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "deepseek_train/model/model_config.h"

namespace dst {

// The "format" value of every manifest this library writes and reads.
inline constexpr const char* kCheckpointFormat = "deepseek_train-checkpoint-v1";

// Where a piece of a tensor sits in the tensor. The holder's block is the range
// [block_start, block_start + block_length) of the global tensor along split_dim (-1: the whole
// tensor), in coordinates padded past the global size where the holder pads (vocabulary rows);
// the piece is the flat element range [begin, end) of that block in row-major order.
struct PieceLocation {
  int split_dim = -1;
  int64_t block_start = 0;
  int64_t block_length = 0;
  int64_t begin = 0;
  int64_t end = 0;
};

struct CheckpointLayout {
  int world_size = 1;
  int dp = 1, tp = 1, pp = 1;
  int zero_stage = 0;
  int virtual_stages = 1;
};

// Everything in the manifest besides the tensors.
struct CheckpointInfo {
  int64_t step = 0;             // optimizer steps taken (the LR schedule's position)
  int64_t optimizer_steps = 0;  // AdamW's bias-correction count
  std::string sampler_state;    // DistributedSampler::serialize()
  double loss_scale = 1.0;
  int64_t loss_scaler_clean_steps = 0;
  int64_t skipped_steps = 0;
  CheckpointLayout layout;
  ModelConfig model;
  std::string param_dtype = "float32";
  std::string recipe;  // the training recipe as resolved (no secrets: keys are never stored)
  std::string library_version;
  // train/provenance.h as one JSON object ("" when the run recorded none).
  std::string provenance;
};

// One stored piece of a tensor's state: a 1-D HDF5 dataset in one data file.
struct ManifestPiece {
  std::string file;     // data file, relative to the checkpoint directory (listed in `files`)
  std::string dataset;  // dataset name in that file
  PieceLocation location;
};

// One kind of state of a tensor ("master", "exp_avg", "exp_avg_sq", "param", "rng").
struct ManifestState {
  std::string dtype;  // a checkpoint dtype name (is_checkpoint_dtype_name)
  std::vector<ManifestPiece> pieces;
};

struct ManifestTensor {
  std::vector<int64_t> shape;                   // global, unpadded
  std::map<std::string, ManifestState> states;  // kind -> state
};

struct ManifestFile {
  std::string sha256;  // hex digest of the file's bytes as stored
  int64_t bytes = 0;
};

struct ManifestEncryption {
  std::string cipher;  // "AES-256-GCM" ("" when the manifest does not say)
  std::string key_fingerprint;
};

struct CheckpointManifest {
  std::string format;  // kCheckpointFormat
  CheckpointInfo info;
  std::optional<ManifestEncryption> encryption;  // absent or null: the files are not encrypted
  std::map<std::string, ManifestFile> files;     // data file name -> checksum and size
  std::map<std::string, ManifestTensor> tensors;
};

// The dtype names manifests use: float32, bfloat16, float16, int64, uint8.
bool is_checkpoint_dtype_name(const std::string& name);

// Parses and validates manifest.json text. Checks everything the reader relies on: the format;
// the type and range of every field it reads (integers fit their C++ type); shapes of
// non-negative dims whose product fits in int64; known dtypes; data files named by plain paths
// inside the checkpoint directory with non-negative sizes; every piece in a listed file, with
// -1 <= split_dim < rank, non-negative block_start/block_length whose padded tensor still fits in
// int64, and 0 <= begin <= end. Throws a one-line CheckpointError "<source>[ <where>]: ...
// key '<key>' ..." naming the offending key (or "invalid JSON at byte N"); an invalid "model"
// section throws ConfigError naming `source`, as model_config_from_hf_json_text does.
CheckpointManifest parse_checkpoint_manifest(const std::string& json_text,
                                             const std::string& source);

}  // namespace dst

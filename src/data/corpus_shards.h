// Output shards of `dstrain prepare`: shard file names ("<split>-NNNNN.h5") and the temporary
// files of interrupted runs, and the writing of a packed shard (token and loss-mask rows plus
// its attributes) as an HDF5 file.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "deepseek_train/core/crypto.h"
#include "deepseek_train/data/prepared_dataset.h"

namespace dst::detail {

constexpr const char* kShardFormat = "deepseek_train-prepared-shard";

std::string shard_file_name(const std::string& split, int64_t index);

// Index of "<split>-<digits>.h5" (nullopt for any other name).
std::optional<int64_t> shard_index_of(const std::string& name, const std::string& split);

// A temporary file left by an interrupted run of another process (temporary_path_for names).
bool is_leftover_temporary(const std::string& name);

struct PackedShard {
  std::vector<int32_t> tokens;  // rows * (seq_len + 1)
  std::vector<uint8_t> mask;
  int64_t total_tokens = 0;
  int64_t rows = 0;
};

// Writes `packed` and the attributes `a` as the HDF5 file `path` (byte-identical for equal
// content). Throws IoError.
void write_shard_file(const std::string& path, const PackedShard& packed,
                      const PreparedShardAttributes& a);
// The same file's bytes built in memory (HDF5's core driver, nothing written), for a shard that
// is sealed before it reaches the disk. Throws IoError naming `what`.
std::string shard_file_image(const PackedShard& packed, const PreparedShardAttributes& a,
                             const std::string& what);

// Encrypted corpora (prepare.encryption): each shard file is an envelope whose associated data is
// its file name (shards cannot be swapped); the manifest's private part (per-shard data, sources,
// counts) is an envelope under kSealedManifestContext, stored as hex text in key "sealed" beside
// "encryption": {algorithm, key_fingerprint}.
inline constexpr const char* kSealedManifestContext = "deepseek_train prepared manifest";
// The manifest as stored under `key`: its private members sealed.
nlohmann::json seal_manifest(nlohmann::json manifest, const EncryptionKey& key);
// The sealed manifest's content again ("sealed" and "encryption" replaced by the members they
// hold). DataError naming `what` for a sealed part that is not hex or not a JSON object;
// CheckpointError when it does not authenticate (another key, changed bytes).
nlohmann::json unseal_manifest(nlohmann::json manifest, const EncryptionKey& key,
                               const std::string& what);

}  // namespace dst::detail

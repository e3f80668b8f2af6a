// Reading a corpus written by `dstrain prepare` (corpus_prepare.h): the manifest's essentials,
// a shard's attributes, and PreparedDataset, a SequenceDataset over one split whose rows are read
// from the HDF5 shards on demand. An encrypted corpus (prepare.encryption) is read with its key:
// the manifest's sealed part and each shard are decrypted in memory only (core/crypto.h).
// Torch-free; HDF5 stays out of this header.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "deepseek_train/core/crypto.h"
#include "deepseek_train/data/sequence_dataset.h"

namespace dst {

struct PreparedShardInfo {
  std::string file;  // name inside the prepared directory
  int64_t rows = 0;
  int64_t documents = 0;
  int64_t tokens = 0;
  std::string content_hash;
};

struct PreparedSplitInfo {
  int64_t rows = 0;
  int64_t documents = 0;
  int64_t tokens = 0;
  std::vector<PreparedShardInfo> shards;
};

struct PreparedManifest {
  std::string path;  // the manifest.json read
  int format_version = 0;
  int64_t seq_len = 0;
  std::string tokenizer_describe;
  std::string tokenizer_fingerprint;
  int32_t vocab_size = 0;
  int32_t eos_id = -1;
  std::map<std::string, PreparedSplitInfo> splits;  // "train", "validation"
  std::string key_fingerprint;  // of the key an encrypted corpus was written with ("": plaintext)

  // Rows of a split (0 for a split that is not there).
  int64_t rows(const std::string& split) const;
};

// Parses `<dir>/manifest.json`. Throws DataError naming the manifest when it is missing, not
// JSON, of another format or version, or lacks a key (the message names the key); for an
// encrypted corpus, when `key` is null or another key's (CheckpointError when the sealed part
// does not authenticate).
PreparedManifest read_prepared_manifest(const std::string& dir, const EncryptionKey* key = nullptr);

// Attributes stored in every shard file.
struct PreparedShardAttributes {
  std::string format;
  int64_t format_version = 0;
  std::string split;
  int64_t shard_index = 0;
  std::string content_hash;
  int64_t seq_len = 0;
  int64_t documents = 0;
  int64_t tokens = 0;  // including EOS, before the tail was dropped
  int64_t dropped_tail_tokens = 0;
  int64_t rows = 0;
  std::string tokenizer_fingerprint;
  int64_t eos_id = -1;
};

// The attributes of a shard file, or nullopt when the file is missing, not HDF5, lacks an
// attribute or its `tokens`/`loss_mask` datasets do not have shape [rows, seq_len + 1], or is
// encrypted and does not open with `key` (null: no key). Never throws for a bad file.
std::optional<PreparedShardAttributes> read_prepared_shard_attributes(
    const std::string& path, const EncryptionKey* key = nullptr);

class PreparedDataset final : public SequenceDataset {
 public:
  // Opens `dir`'s manifest and the shards of `split` ("train" or "validation"), keeping them
  // open. When `expected_tokenizer_fingerprint` is non-empty and differs from the manifest's,
  // throws DataError naming the manifest. A missing or corrupt manifest or shard, a shard whose
  // content hash or shape differs from the manifest, or a split without rows throws DataError
  // naming the file. An encrypted corpus needs `key` (the manifest's errors above; a shard that
  // does not authenticate — changed or another key's — throws CheckpointError naming it).
  PreparedDataset(const std::string& dir, const std::string& split,
                  const std::string& expected_tokenizer_fingerprint = "",
                  const EncryptionKey* key = nullptr);
  ~PreparedDataset() override;
  PreparedDataset(const PreparedDataset&) = delete;
  PreparedDataset& operator=(const PreparedDataset&) = delete;

  int64_t size() const override;
  int64_t seq_len() const override;
  // Row i: input_ids = its first seq_len tokens, labels = its last seq_len tokens with -100
  // where the loss mask is 0. Thread-safe. Throws DataError for an index out of range or a read
  // failure (naming the shard).
  TokenBatch batch(const std::vector<int64_t>& indices) const override;
  // The stored rows (seq_len + 1 tokens each) and their loss masks, row-major, in the order of
  // `indices`. Same errors as batch().
  void read_rows(const std::vector<int64_t>& indices, std::vector<int32_t>* tokens,
                 std::vector<uint8_t>* loss_mask) const;

  const PreparedManifest& manifest() const;
  const std::string& split() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dst

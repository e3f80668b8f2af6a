// Corpus preparation behind `dstrain prepare`: reads text/JSONL inputs, cleans, de-duplicates and
// PII-scrubs the documents, splits them into train/validation, tokenizes and packs them into rows
// of seq_len + 1 tokens, and writes HDF5 shards plus a manifest.json that PreparedDataset
// (prepared_dataset.h) reads. Re-runs on unchanged input rewrite nothing. Torch-free.
//
// Output directory layout:
//   train-00000.h5, train-00001.h5, ...       datasets `tokens` int32 [rows, seq_len + 1] and
//   validation-00000.h5, ...                  `loss_mask` uint8 [rows, seq_len + 1]; attributes
//                                             content_hash, documents, tokens, rows, ...
//   manifest.json                             format, tokenizer, options, shards, counts, sources
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "deepseek_train/core/crypto.h"
#include "deepseek_train/core/log.h"
#include "deepseek_train/data/near_dedup.h"
#include "deepseek_train/data/pii_scrubber.h"

namespace dst {

inline constexpr const char* kPreparedFormat = "deepseek_train-prepared-corpus";
inline constexpr int kPreparedFormatVersion = 1;
inline constexpr const char* kPreparedManifestName = "manifest.json";

struct PrepareOptions {
  // Files (.txt, .jsonl) and directories (their *.txt and *.jsonl files, sorted by name, not
  // recursive), read in the order given.
  std::vector<std::string> inputs;
  std::string output_dir;
  std::string tokenizer = "byte";  // "byte" or a tokenizer.json path (load_tokenizer)
  std::string eos_token;           // end-of-document token for tokenizers that do not name one
  int64_t seq_len = 1024;          // rows hold seq_len + 1 tokens

  // .txt inputs: "paragraph" (documents separated by blank lines), "line" (one document per
  // non-blank line) or "file" (the whole file is one document).
  std::string text_split = "paragraph";
  // .jsonl inputs: one object per line with a string `text_field`, or instruction data with
  // string `prompt_field` and `response_field` (the loss is masked on the prompt).
  std::string text_field = "text";
  std::string prompt_field = "prompt";
  std::string response_field = "response";
  // Chat records: a `messages_field` list of {role, content}, rendered with `chat_template` (a
  // built-in chatml, deepseek, llama3, or a model's Jinja template: its tokenizer_config.json, a
  // .jinja file or the model folder; ChatTemplate::load in data/chat_template.h) and tokenized
  // whole; the loss trains on the assistant turns only.
  std::string messages_field = "messages";
  std::string chat_template;

  // Documents with fewer characters (code points, after cleaning) are dropped; empty documents
  // are always dropped.
  int64_t min_chars = 1;
  bool exact_dedup = true;
  bool near_dedup = false;
  NearDedupOptions near;
  bool scrub_pii = true;
  PiiOptions pii;

  double val_fraction = 0.05;  // chosen per document from a hash of its text and `seed`
  uint64_t seed = 1234;
  int64_t documents_per_shard = 10000;
  int threads = 0;       // worker threads; 0 = hardware concurrency
  bool progress = true;  // progress bar on stderr (only when stderr is a terminal)
  // Encryption at rest (prepare.encryption.key_file / key_env, core/crypto.h): every shard is
  // sealed with AES-256-GCM and the manifest's per-shard data, sources and counts too; training
  // and `dstrain eval --data` read them with the same key (data.encryption, --key-file).
  EncryptionKeySource encryption;

  // Throws ConfigError naming the key ("prepare.seq_len must be positive, got 0").
  void validate() const;
};

struct PreparedShardReport {
  std::string file;  // name inside the output directory
  int64_t documents = 0;
  int64_t tokens = 0;  // including EOS, before the tail is dropped
  int64_t dropped_tail_tokens = 0;
  int64_t rows = 0;
  std::string content_hash;
  bool written = false;  // false: an identical shard was already there
};

struct PrepareSplitReport {
  std::vector<PreparedShardReport> shards;
  int64_t documents = 0;
  int64_t tokens = 0;
  int64_t dropped_tail_tokens = 0;
  int64_t rows = 0;
};

struct PrepareReport {
  std::string output_dir;
  std::string manifest_path;
  int64_t input_files = 0;
  int64_t input_bytes = 0;
  int64_t documents_read = 0;
  int64_t dropped_short = 0;
  int64_t exact_duplicates = 0;
  int64_t near_duplicates = 0;
  int64_t documents_kept = 0;
  PiiCounts pii;  // every enabled kind, 0 when nothing was found
  PrepareSplitReport train;
  PrepareSplitReport validation;
  int64_t tokens = 0;  // both splits, including EOS
  int64_t dropped_tail_tokens = 0;
  int64_t rows = 0;
  int64_t shards_written = 0;
  int64_t shards_skipped = 0;
  std::vector<std::string> stale_files_removed;
  bool manifest_written = false;  // false: the manifest on disk was already identical
  double seconds = 0.0;
  double mb_per_second = 0.0;  // input bytes per second

  // A few lines for the command line.
  std::string summary() const;
};

// Runs the whole preparation (see the file comment). Throws ConfigError for bad options,
// DataError "<file>:<line>: ..." for bad input (a malformed JSONL line, a missing field, an
// unreadable file, an unknown extension) and for a tokenizer without EOS, IoError when the
// output cannot be written. Files are written atomically; a failure leaves no partial shard or
// manifest (the previous manifest is removed before the first shard that changes).
PrepareReport prepare_corpus(const PrepareOptions& options, const Logger& logger = Logger());

// Whitespace normalisation applied to every document: invalid UTF-8 repaired (U+FFFD), \r\n and
// \r become \n, control characters other than \n and \t removed, runs of spaces/tabs become one
// space, spaces before a newline removed, leading/trailing whitespace stripped (each end only when
// asked; instruction prompts keep their trailing and responses their leading space).
std::string clean_text(const std::string& text, bool strip_leading = true,
                       bool strip_trailing = true);

}  // namespace dst

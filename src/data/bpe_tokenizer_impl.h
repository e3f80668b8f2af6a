// Private to the BPE tokenizer (bpe_tokenizer.cpp encodes and decodes, bpe_tokenizer_load.cpp
// reads tokenizer.json): the data structures of the encode pipeline (pre-tokenizer steps and
// piece buffers, added tokens and their trie, the word cache) and BpeTokenizer::Impl, which holds
// a loaded tokenizer.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/pcre2_regex.h"
#include "data/utf8.h"
#include "deepseek_train/data/bpe_tokenizer.h"

namespace dst {

namespace detail {

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// One step of the pre-tokenizer. Split and Digits are a regex split; ByteLevel optionally
// prefixes a space, optionally splits with the GPT-2 regex, then maps bytes to characters.
struct PreTokenizerStep {
  bool is_byte_level = false;
  const Regex* regex = nullptr;  // null for ByteLevel with use_regex false
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;
};

// A part of a piece: [start, end) and whether the pattern matched it.
struct Span {
  size_t start;
  size_t end;
  bool is_match;
};

// The current pieces of one text segment. Pieces are views into the input or into `owned`
// (pieces that were given a prefix space or byte-mapped).
struct PieceBuffer {
  std::vector<std::string_view> pieces;
  std::vector<std::string_view> next_pieces;
  std::deque<std::string> owned;
  // After a ByteLevel step the pieces still hold raw bytes; the byte-to-character mapping is
  // applied lazily (by the model, or here if a later step needs the mapped text).
  bool byte_mapping_pending = false;
  std::vector<Span> spans;
  std::vector<Span> merged;
};

// ---------------------------------------------------------------------------------------------
// Added tokens

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// Byte trie over added-token contents, for the crate's leftmost-longest matching.
class AddedTokenTrie {
 public:
  AddedTokenTrie() : nodes_(1) { first_bytes_.fill(false); }

  void insert(std::string_view content, int32_t token_index) {
    first_bytes_[byte_at(content, 0)] = true;
    int32_t node = 0;
    for (char c : content) {
      auto& children = nodes_[node].children;
      const auto it =
          std::lower_bound(children.begin(), children.end(), static_cast<unsigned char>(c),
                           [](const std::pair<unsigned char, int32_t>& child, unsigned char b) {
                             return child.first < b;
                           });
      if (it != children.end() && it->first == static_cast<unsigned char>(c)) {
        node = it->second;
      } else {
        const auto child = static_cast<int32_t>(nodes_.size());
        children.insert(it, {static_cast<unsigned char>(c), child});
        nodes_.emplace_back();
        node = child;
      }
    }
    nodes_[node].token_index = token_index;
  }

  bool empty() const { return nodes_.size() == 1; }

  // Longest token starting at text[pos]: returns its index and sets *length, or -1.
  int32_t longest_at(std::string_view text, size_t pos, size_t* length) const {
    if (!first_bytes_[byte_at(text, pos)]) return -1;
    int32_t node = 0;
    int32_t best = -1;
    for (size_t i = pos; i < text.size(); ++i) {
      const auto& children = nodes_[node].children;
      const unsigned char b = byte_at(text, i);
      const auto it = std::lower_bound(children.begin(), children.end(), b,
                                       [](const std::pair<unsigned char, int32_t>& child,
                                          unsigned char key) { return child.first < key; });
      if (it == children.end() || it->first != b) break;
      node = it->second;
      if (nodes_[node].token_index >= 0) {
        best = nodes_[node].token_index;
        *length = i + 1 - pos;
      }
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token_index = -1;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_bytes_;
};

// A segment of the input: an added token (added_id >= 0) or text for the pre-tokenizer.
struct Segment {
  std::string_view text;
  int32_t added_id;
};

// ---------------------------------------------------------------------------------------------
// Word cache

// Ids of recently encoded pre-token words, shared by all threads: sharded, one mutex per shard.
// A full shard is emptied (simple bound, no bookkeeping on hits).
class WordCache {
 public:
  explicit WordCache(size_t capacity) : shard_capacity_(std::max<size_t>(1, capacity / kShards)) {
    for (Shard& shard : shards_) shard.words.reserve(shard_capacity_);
  }

  // Appends the cached ids of `word` to `out`; false when not cached.
  bool append_cached(const std::string& word, size_t hash, std::vector<int32_t>& out) const {
    Shard& shard = shards_[hash % kShards];
    std::lock_guard<std::mutex> lock(shard.mutex);
    const auto it = shard.words.find(word);
    if (it == shard.words.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }

  void store(std::string word, size_t hash, std::vector<int32_t> ids) const {
    Shard& shard = shards_[hash % kShards];
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.words.size() >= shard_capacity_) shard.words.clear();
    shard.words.emplace(std::move(word), std::move(ids));
  }

 private:
  static constexpr size_t kShards = 64;
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> words;
  };
  size_t shard_capacity_;
  mutable std::array<Shard, kShards> shards_;
};

// Words at least this long are not cached (the crate's MAX_LENGTH).
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kCacheCapacity = 65536;

}  // namespace detail

// =============================================================================================

struct BpeTokenizer::Impl {
  std::string source;  // the path (or display name) used in messages
  std::string file_sha256;

  // --- model
  std::unordered_map<std::string, int32_t> vocab;
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  std::unordered_map<uint64_t, Merge> merges;  // key: (left id << 32) | right id
  bool ignore_merges = false;
  bool fuse_unk = false;
  std::optional<std::string> unk_token;
  std::array<uint32_t, 256> byte_chars{};  // GPT-2 byte -> character
  std::array<int32_t, 256> byte_ids{};     // id of each byte's character, -1 if none
  std::vector<int32_t> small_char_ids;     // id of each code point < 0x800, -1 if none

  // --- added tokens
  std::vector<detail::AddedToken> added_tokens;
  std::unordered_map<std::string, int32_t> added_ids;
  detail::AddedTokenTrie non_normalized_trie;
  detail::AddedTokenTrie normalized_trie;
  std::unique_ptr<detail::Regex> word_char_regex;  // Rust regex `\w`, for single_word

  // --- pre-tokenizer
  std::vector<std::unique_ptr<detail::Regex>> regexes;
  std::vector<detail::PreTokenizerStep> steps;
  bool model_input_is_raw_bytes = false;

  // --- decoding and ids
  bool byte_level_decoder = false;
  std::vector<std::string> token_texts;    // by id
  std::vector<std::string> decoded_bytes;  // by id, ByteLevel decoder
  std::vector<uint8_t> id_kinds;           // by id: kUnassigned, kRegular, kSpecial
  static constexpr uint8_t kUnassigned = 0, kRegular = 1, kSpecial = 2;
  int32_t vocab_size = 0;
  int32_t eos_id = -1;

  detail::WordCache cache{detail::kCacheCapacity};

  Impl(const std::string& json_text, const std::string& source_name, const std::string& eos_token);

  // --- loading
  void load_model(const nlohmann::json& model);
  void load_added_tokens(const nlohmann::json& list);
  void load_normalizer(const nlohmann::json* normalizer);
  void load_pre_tokenizer(const nlohmann::json& node, const std::string& path);
  void load_decoder(const nlohmann::json* decoder);
  const detail::Regex* add_regex(const std::string& written, bool is_literal,
                                 const std::string& where);
  void finish(const std::string& eos_token);

  // --- encoding
  std::optional<int32_t> find_token(std::string_view token) const;
  std::vector<int32_t> encode(std::string_view text) const;
  void split_on_added_tokens(std::string_view text, const detail::AddedTokenTrie& trie,
                             std::vector<detail::Segment>& out) const;
  void pre_tokenize(std::string_view text, detail::PieceBuffer& buffer, pcre2_match_data* md) const;
  void map_pieces_to_chars(detail::PieceBuffer& buffer) const;
  void encode_word(std::string_view word, bool raw_bytes, std::vector<int32_t>& out) const;
  void merge_word(std::string_view word, bool raw_bytes, std::vector<int32_t>& out) const;
  const Merge* find_merge(int32_t left, int32_t right) const {
    const auto it = merges.find((static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
                                static_cast<uint32_t>(right));
    return it == merges.end() ? nullptr : &it->second;
  }
  bool is_word_char_before(std::string_view text, size_t end) const;
  bool is_word_char_at(std::string_view text, size_t pos) const;

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const;
};

}  // namespace dst

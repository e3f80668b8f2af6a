// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json. The encode pipeline follows
// the Rust `tokenizers` crate step by step: added tokens are cut out of the raw text, every other
// segment goes through the pre-tokenizer steps (each splits every current piece further), and
// each final piece is BPE-merged. Regexes run on PCRE2 with the Oniguruma escapes the crate's
// patterns rely on translated (see oniguruma_to_pcre2).
#include "deepseek_train/data/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "deepseek_train/core/error.h"
#include "deepseek_train/core/sha256.h"

namespace dst {

namespace {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers

void append_utf8(std::string& out, uint32_t code_point) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

inline unsigned char byte_at(std::string_view text, size_t pos) {
  return static_cast<unsigned char>(text[pos]);
}

// Length of the well-formed UTF-8 sequence at text[pos], or 0 when it is ill-formed; then
// `*invalid_length` is the length of its maximal ill-formed subpart (Unicode 3.9, the unit
// Rust's String::from_utf8_lossy replaces with one U+FFFD).
size_t utf8_sequence_length(std::string_view text, size_t pos, size_t* invalid_length) {
  const unsigned char lead = byte_at(text, pos);
  if (lead < 0x80) return 1;
  size_t continuation_count = 0;
  unsigned char first_low = 0x80;
  unsigned char first_high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    continuation_count = 1;
  } else if (lead == 0xE0) {
    continuation_count = 2;
    first_low = 0xA0;
  } else if (lead == 0xED) {
    continuation_count = 2;
    first_high = 0x9F;
  } else if (lead >= 0xE1 && lead <= 0xEF) {
    continuation_count = 2;
  } else if (lead == 0xF0) {
    continuation_count = 3;
    first_low = 0x90;
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    continuation_count = 3;
  } else if (lead == 0xF4) {
    continuation_count = 3;
    first_high = 0x8F;
  } else {
    *invalid_length = 1;
    return 0;
  }
  size_t i = pos + 1;
  for (size_t k = 0; k < continuation_count; ++k, ++i) {
    const unsigned char low = k == 0 ? first_low : 0x80;
    const unsigned char high = k == 0 ? first_high : 0xBF;
    if (i >= text.size() || byte_at(text, i) < low || byte_at(text, i) > high) {
      *invalid_length = i - pos;
      return 0;
    }
  }
  return i - pos;
}

bool is_valid_utf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    // ASCII fast path, 8 bytes at a time.
    while (pos + 8 <= text.size()) {
      uint64_t block;
      std::memcpy(&block, text.data() + pos, 8);
      if (block & 0x8080808080808080ULL) break;
      pos += 8;
    }
    if (pos >= text.size()) break;
    size_t invalid_length = 0;
    const size_t length = utf8_sequence_length(text, pos, &invalid_length);
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

// Rust's String::from_utf8_lossy: each maximal ill-formed subpart becomes U+FFFD.
std::string lossy_utf8(std::string_view bytes) {
  if (is_valid_utf8(bytes)) return std::string(bytes);
  std::string out;
  out.reserve(bytes.size() + 16);
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t invalid_length = 0;
    const size_t length = utf8_sequence_length(bytes, pos, &invalid_length);
    if (length > 0) {
      out.append(bytes.data() + pos, length);
      pos += length;
    } else {
      out += "\xEF\xBF\xBD";
      pos += invalid_length;
    }
  }
  return out;
}

// Length of the character whose (valid) lead byte is `lead`.
inline size_t utf8_char_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// Code point of the valid UTF-8 character at text[pos].
uint32_t code_point_at(std::string_view text, size_t pos) {
  const unsigned char lead = byte_at(text, pos);
  const size_t length = utf8_char_length(lead);
  if (length == 1) return lead;
  uint32_t code_point = lead & (0x7F >> length);
  for (size_t i = 1; i < length; ++i)
    code_point = (code_point << 6) | (byte_at(text, pos + i) & 0x3F);
  return code_point;
}

// Start of the (valid) UTF-8 character that ends at text[end - 1].
size_t previous_char_start(std::string_view text, size_t end) {
  size_t pos = end - 1;
  while (pos > 0 && (byte_at(text, pos) & 0xC0) == 0x80) --pos;
  return pos;
}

// Unicode White_Space, which is what `\s` means both for Oniguruma (the crate's pre-tokenizer
// regexes) and for Rust's regex crate (its added-token lstrip/rstrip rules).
bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// A quoted, single-line rendering of file content for error messages.
std::string shown(std::string_view text) { return "'" + printable(text, 80) + "'"; }

// GPT-2's bytes_to_unicode: the printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
// themselves and the other 68 bytes for U+0100, U+0101, ... in byte order, so every byte has a
// visible character in the vocabulary.
std::array<uint32_t, 256> gpt2_byte_chars() {
  std::array<uint32_t, 256> chars{};
  uint32_t next_extra = 256;
  for (uint32_t byte = 0; byte < 256; ++byte) {
    const bool printable = (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) ||
                           (byte >= 0xAE && byte <= 0xFF);
    chars[byte] = printable ? byte : next_extra++;
  }
  return chars;
}

// ---------------------------------------------------------------------------------------------
// Regexes

// The crate compiles pre-tokenizer patterns with Oniguruma (Ruby syntax). PCRE2 reads them the
// same way except for a few escapes, rewritten here:
//  - \s \S: Oniguruma's Unicode White_Space set; PCRE2's \s also takes U+180E.
//  - \w \W (outside a class, and \w inside one): Oniguruma's Letter|Mark|Number|Connector_Punct.
//  - \h \H: a hex digit in Oniguruma (horizontal space in PCRE2).
//  - \uHHHH: PCRE2 spells it \x{HHHH}.
// `^`/`$` match at line boundaries in Oniguruma's default syntax; the regex is compiled with
// PCRE2_MULTILINE and LF newlines for that.
const char kWhiteSpaceItems[] =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";
const char kNonWhiteSpaceItems[] =
    "\\x{0}-\\x{8}\\x{E}-\\x{1F}\\x{21}-\\x{84}\\x{86}-\\x{9F}\\x{A1}-\\x{167F}"
    "\\x{1681}-\\x{1FFF}\\x{200B}-\\x{2027}\\x{202A}-\\x{202E}\\x{2030}-\\x{205E}"
    "\\x{2060}-\\x{2FFF}\\x{3001}-\\x{10FFFF}";
const char kWordItems[] = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
const char kHexItems[] = "0-9A-Fa-f";
const char kNonHexItems[] = "\\x{0}-/:-@G-`g-\\x{10FFFF}";

bool is_hex_digit(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

std::string oniguruma_to_pcre2(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  // True right after "[" or "[^", where "]" is a literal.
  bool at_class_start = false;
  // Writes a set of class items: bare inside a class, as [items] or [^items] outside.
  const auto class_item = [&](const char* items, bool negate) {
    if (in_class) {
      out += items;
    } else {
      out += negate ? "[^" : "[";
      out += items;
      out += "]";
    }
  };
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    const bool was_class_start = at_class_start;
    at_class_start = false;
    if (c == '\\' && i + 1 < pattern.size()) {
      const char escaped = pattern[i + 1];
      ++i;
      switch (escaped) {
        case 's':
          class_item(kWhiteSpaceItems, false);
          break;
        case 'S':
          if (in_class) {
            out += kNonWhiteSpaceItems;
          } else {
            class_item(kWhiteSpaceItems, true);
          }
          break;
        case 'w':
          class_item(kWordItems, false);
          break;
        case 'W':
          if (in_class) {
            out += "\\W";  // Not expressible inside a class; PCRE2's \W is close.
          } else {
            class_item(kWordItems, true);
          }
          break;
        case 'h':
          class_item(kHexItems, false);
          break;
        case 'H':
          if (in_class) {
            out += kNonHexItems;
          } else {
            class_item(kHexItems, true);
          }
          break;
        case 'u':
          if (i + 4 < pattern.size() && is_hex_digit(pattern[i + 1]) &&
              is_hex_digit(pattern[i + 2]) && is_hex_digit(pattern[i + 3]) &&
              is_hex_digit(pattern[i + 4])) {
            out += "\\x{" + pattern.substr(i + 1, 4) + "}";
            i += 4;
          } else {
            out += "\\u";
          }
          break;
        default:
          out.push_back('\\');
          out.push_back(escaped);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      at_class_start = true;
      out.push_back(c);
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') {
        out.push_back('^');
        ++i;
      }
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      // POSIX class such as [:alpha:]: copy through its closing ":]".
      const size_t close = pattern.find(":]", i + 2);
      if (close != std::string::npos) {
        out.append(pattern, i, close + 2 - i);
        i = close + 1;
        continue;
      }
    }
    if (in_class && c == ']' && !was_class_start) in_class = false;
    out.push_back(c);
  }
  return out;
}

struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

MatchData new_match_data() {
  MatchData data(pcre2_match_data_create(1, nullptr));
  DST_CHECK(data != nullptr, InternalError, "out of memory creating PCRE2 match data");
  return data;
}

std::string pcre2_message(int error_code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(error_code, buffer, sizeof(buffer)) < 0) {
    return "PCRE2 error " + std::to_string(error_code);
  }
  return reinterpret_cast<const char*>(buffer);
}

// A compiled pattern; immutable, so one object serves all threads (each passes its own match
// data).
class Regex {
 public:
  // `written` is the pattern as the file has it (for messages); `where` names its JSON key.
  Regex(const std::string& written, const std::string& pcre2_pattern, const std::string& source,
        const std::string& where, uint32_t extra_options = 0)
      : written_(written), source_(source) {
    pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
    DST_CHECK(context != nullptr, InternalError, "out of memory creating a PCRE2 context");
    pcre2_set_newline(context, PCRE2_NEWLINE_LF);
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre2_pattern.data()),
                              pcre2_pattern.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | extra_options, &error_code,
                              &error_offset, context));
    pcre2_compile_context_free(context);
    DST_CHECK(code_ != nullptr, DataError,
              source << ": " << where << ": regex " << shown(written) << " does not compile ("
                     << pcre2_message(error_code) << " at offset " << error_offset
                     << " of its PCRE2 form " << shown(pcre2_pattern) << ")");
    // JIT makes matching several times faster; without it the interpreter is used silently.
    pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);
  }

  // Whether the pattern matches `subject` at `offset`; the match is in match_data's ovector.
  // `subject` must be valid UTF-8 (checked by the caller once for the whole input).
  bool search(std::string_view subject, size_t offset, pcre2_match_data* match_data) const {
    static const char kEmpty[] = "";
    const auto* data = reinterpret_cast<PCRE2_SPTR>(subject.empty() ? kEmpty : subject.data());
    int rc = pcre2_match(code_.get(), data, subject.size(), offset, PCRE2_NO_UTF_CHECK, match_data,
                         nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The JIT's 32 KiB stack is too small for this input; the interpreter uses the heap.
      rc = pcre2_match(code_.get(), data, subject.size(), offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       match_data, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    DST_CHECK(rc >= 0, DataError,
              source_ << ": regex " << shown(written_) << " failed on a piece of " << subject.size()
                      << " bytes (" << pcre2_message(rc) << ")");
    return true;
  }

  // Calls on_match(start, end) for each match in `subject`, the way the crate iterates
  // Oniguruma matches: left to right, empty matches included, but never an empty match ending
  // where the previous match ended (the search then steps one character).
  template <typename OnMatch>
  void for_each_match(std::string_view subject, pcre2_match_data* match_data,
                      OnMatch&& on_match) const {
    size_t search_from = 0;
    bool have_previous = false;
    size_t previous_end = 0;
    while (search_from <= subject.size()) {
      if (!search(subject, search_from, match_data)) return;
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
      const size_t start = ovector[0];
      const size_t end = std::max<size_t>(ovector[0], ovector[1]);
      if (start == end && have_previous && previous_end == end) {
        search_from +=
            search_from < subject.size() ? utf8_char_length(byte_at(subject, search_from)) : 1;
        continue;
      }
      search_from = end;
      have_previous = true;
      previous_end = end;
      on_match(start, end);
    }
  }

 private:
  std::unique_ptr<pcre2_code, CodeDeleter> code_;
  std::string written_;
  std::string source_;
};

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

// NormalizedString::split of the crate: the piece as alternating matched / unmatched spans,
// regrouped per `behavior`, empty parts dropped (as PreTokenizedString::split does).
void split_piece(std::string_view piece, const Regex& regex, SplitBehavior behavior, bool invert,
                 pcre2_match_data* match_data, PieceBuffer& buffer,
                 std::vector<std::string_view>& out) {
  std::vector<Span>& spans = buffer.spans;
  spans.clear();
  size_t previous_end = 0;
  regex.for_each_match(piece, match_data, [&](size_t start, size_t end) {
    if (previous_end != start) spans.push_back({previous_end, start, false});
    spans.push_back({start, end, true});
    previous_end = end;
  });
  if (previous_end != piece.size()) spans.push_back({previous_end, piece.size(), false});
  if (invert) {
    for (Span& span : spans) span.is_match = !span.is_match;
  }

  std::vector<Span>& parts = buffer.merged;  // is_match here means "remove"
  parts.clear();
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& span : spans) parts.push_back({span.start, span.end, false});
      break;
    case SplitBehavior::kRemoved:
      parts = spans;
      break;
    case SplitBehavior::kContiguous:
      for (const Span& span : spans) {
        if (span.is_match == previous_match && !parts.empty()) {
          parts.back().end = span.end;
        } else {
          parts.push_back({span.start, span.end, false});
        }
        previous_match = span.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& span : spans) {
        if (span.is_match && !previous_match && !parts.empty()) {
          parts.back().end = span.end;
        } else {
          parts.push_back({span.start, span.end, false});
        }
        previous_match = span.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !parts.empty()) {
          parts.back().start = it->start;
        } else {
          parts.push_back({it->start, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
  }
  for (const Span& part : parts) {
    if (!part.is_match && part.end > part.start) {
      out.push_back(piece.substr(part.start, part.end - part.start));
    }
  }
}

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

// ---------------------------------------------------------------------------------------------
// JSON access with file-naming messages

const Json* member(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

bool bool_member(const Json& object, const char* key, bool default_value, const std::string& source,
                 const std::string& path) {
  const Json* value = member(object, key);
  if (value == nullptr || value->is_null()) return default_value;
  DST_CHECK(value->is_boolean(), DataError,
            source << ": key '" << path << "." << key << "' must be true or false");
  return value->get<bool>();
}

// A string member; nullopt when missing or null.
std::optional<std::string> string_member(const Json& object, const char* key,
                                         const std::string& source, const std::string& path) {
  const Json* value = member(object, key);
  if (value == nullptr || value->is_null()) return std::nullopt;
  DST_CHECK(value->is_string(), DataError,
            source << ": key '" << path << "." << key << "' must be a string");
  return value->get<std::string>();
}

std::string type_of(const Json& object, const std::string& source, const std::string& path) {
  DST_CHECK(object.is_object(), DataError, source << ": key '" << path << "' must be an object");
  const std::optional<std::string> type = string_member(object, "type", source, path);
  DST_CHECK(type.has_value(), DataError, source << ": key '" << path << ".type' is missing");
  return *type;
}

// Ids index dense per-id tables (texts, kinds, decoded bytes), so they are bounded: 2^22 ids is
// 16 times the largest vocabularies in use, and keeps a hostile file's tables under 300 MB.
constexpr int64_t kMaxTokenIds = int64_t{1} << 22;

// Deepest JSON nesting accepted (real files nest under 10 levels): nested pre-tokenizer
// Sequences are loaded recursively.
constexpr int kMaxJsonDepth = 128;

bool is_valid_id(const Json& value) {
  return value.is_number_integer() && value.get<int64_t>() >= 0 &&
         value.get<int64_t>() < kMaxTokenIds;
}

int32_t id_value(const Json& value, const std::string& source, const std::string& where) {
  DST_CHECK(is_valid_id(value), DataError,
            source << ": " << where << " must be a non-negative integer id below " << kMaxTokenIds);
  return static_cast<int32_t>(value.get<int64_t>());
}

}  // namespace

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
  std::vector<AddedToken> added_tokens;
  std::unordered_map<std::string, int32_t> added_ids;
  AddedTokenTrie non_normalized_trie;
  AddedTokenTrie normalized_trie;
  std::unique_ptr<Regex> word_char_regex;  // Rust regex `\w`, for single_word

  // --- pre-tokenizer
  std::vector<std::unique_ptr<Regex>> regexes;
  std::vector<PreTokenizerStep> steps;
  bool model_input_is_raw_bytes = false;

  // --- decoding and ids
  bool byte_level_decoder = false;
  std::vector<std::string> token_texts;    // by id
  std::vector<std::string> decoded_bytes;  // by id, ByteLevel decoder
  std::vector<uint8_t> id_kinds;           // by id: kUnassigned, kRegular, kSpecial
  static constexpr uint8_t kUnassigned = 0, kRegular = 1, kSpecial = 2;
  int32_t vocab_size = 0;
  int32_t eos_id = -1;

  WordCache cache{kCacheCapacity};

  Impl(const std::string& json_text, const std::string& source_name, const std::string& eos_token);

  // --- loading
  void load_model(const Json& model);
  void load_added_tokens(const Json& list);
  void load_normalizer(const Json* normalizer);
  void load_pre_tokenizer(const Json& node, const std::string& path);
  void load_decoder(const Json* decoder);
  const Regex* add_regex(const std::string& written, bool is_literal, const std::string& where);
  void finish(const std::string& eos_token);

  // --- encoding
  std::optional<int32_t> find_token(std::string_view token) const;
  std::vector<int32_t> encode(std::string_view text) const;
  void split_on_added_tokens(std::string_view text, const AddedTokenTrie& trie,
                             std::vector<Segment>& out) const;
  void pre_tokenize(std::string_view text, PieceBuffer& buffer, pcre2_match_data* md) const;
  void map_pieces_to_chars(PieceBuffer& buffer) const;
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

BpeTokenizer::Impl::Impl(const std::string& json_text, const std::string& source_name,
                         const std::string& eos_token)
    : source(source_name), file_sha256(sha256_hex(json_text)) {
  Json root;
  const Json::parser_callback_t limit_depth = [&](int depth, Json::parse_event_t event, Json&) {
    if (event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) {
      DST_CHECK(depth < kMaxJsonDepth, DataError,
                source << ": JSON nested deeper than " << kMaxJsonDepth << " levels");
    }
    return true;
  };
  try {
    root = Json::parse(json_text, limit_depth);
  } catch (const Json::parse_error& e) {
    DST_THROW(DataError,
              source << ": malformed JSON at byte " << e.byte << ": " << one_line(e.what()));
  } catch (const Json::exception& e) {
    // A number too large for a double (out_of_range.406) carries no position.
    DST_THROW(DataError, source << ": malformed JSON: " << one_line(e.what()));
  }
  try {
    DST_CHECK(root.is_object(), DataError, source << ": the top level must be a JSON object");
    const Json* model = member(root, "model");
    DST_CHECK(model != nullptr && model->is_object(), DataError,
              source << ": key 'model' is missing or not an object");
    load_model(*model);
    if (const Json* list = member(root, "added_tokens"); list != nullptr && !list->is_null()) {
      load_added_tokens(*list);
    }
    load_normalizer(member(root, "normalizer"));
    if (const Json* pre = member(root, "pre_tokenizer"); pre != nullptr && !pre->is_null()) {
      load_pre_tokenizer(*pre, "pre_tokenizer");
    }
    load_decoder(member(root, "decoder"));
  } catch (const Json::exception& e) {
    DST_THROW(DataError, source << ": unexpected JSON structure: " << one_line(e.what()));
  }
  finish(eos_token);
}

void BpeTokenizer::Impl::load_model(const Json& model) {
  const std::optional<std::string> type = string_member(model, "type", source, "model");
  // Files written by old versions of the crate may omit the type of a BPE model.
  const std::string model_type =
      type.value_or(member(model, "merges") != nullptr ? "BPE" : "(missing)");
  DST_CHECK(model_type == "BPE", DataError,
            source << ": model.type '" << model_type << "' is not supported (expected BPE)");

  if (const Json* dropout = member(model, "dropout"); dropout != nullptr && !dropout->is_null()) {
    DST_CHECK(dropout->is_number() && dropout->get<double>() == 0.0, DataError,
              source << ": model.dropout " << dropout->dump()
                     << " is not supported (expected null: encoding must be deterministic)");
  }
  DST_CHECK(!bool_member(model, "byte_fallback", false, source, "model"), DataError,
            source << ": model.byte_fallback true is not supported (expected false)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const std::optional<std::string> affix = string_member(model, key, source, "model");
    DST_CHECK(!affix.has_value() || affix->empty(), DataError,
              source << ": model." << key << " " << shown(*affix)
                     << " is not supported (expected null or empty)");
  }
  ignore_merges = bool_member(model, "ignore_merges", false, source, "model");
  fuse_unk = bool_member(model, "fuse_unk", false, source, "model");
  unk_token = string_member(model, "unk_token", source, "model");

  const Json* vocab_json = member(model, "vocab");
  DST_CHECK(vocab_json != nullptr && vocab_json->is_object(), DataError,
            source << ": key 'model.vocab' is missing or not an object");
  vocab.reserve(vocab_json->size());
  for (auto it = vocab_json->begin(); it != vocab_json->end(); ++it) {
    const Json& id = it.value();
    DST_CHECK(is_valid_id(id), DataError,
              source << ": model.vocab[" << shown(it.key())
                     << "] must be a non-negative integer id below " << kMaxTokenIds);
    vocab.emplace(it.key(), static_cast<int32_t>(id.get<int64_t>()));
  }

  const Json* merges_json = member(model, "merges");
  DST_CHECK(merges_json != nullptr && merges_json->is_array(), DataError,
            source << ": key 'model.merges' is missing or not an array");
  merges.reserve(merges_json->size());
  std::string left, right;
  for (size_t rank = 0; rank < merges_json->size(); ++rank) {
    const Json& entry = (*merges_json)[rank];
    // Two spellings: "a b" (split at the first space) and ["a", "b"].
    if (entry.is_string()) {
      const std::string& text = entry.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      DST_CHECK(space != std::string::npos, DataError,
                source << ": model.merges[" << rank << "] " << shown(text)
                       << " is not two tokens separated by a space");
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      DST_THROW(DataError, source << ": model.merges[" << rank
                                  << "] must be a string \"a b\" or a pair [\"a\", \"b\"]");
    }
    const auto left_it = vocab.find(left);
    const auto right_it = vocab.find(right);
    const auto merged_it = vocab.find(left + right);
    DST_CHECK(left_it != vocab.end(), DataError,
              source << ": model.merges[" << rank << "]: token " << shown(left)
                     << " is not in model.vocab");
    DST_CHECK(right_it != vocab.end(), DataError,
              source << ": model.merges[" << rank << "]: token " << shown(right)
                     << " is not in model.vocab");
    DST_CHECK(merged_it != vocab.end(), DataError,
              source << ": model.merges[" << rank << "]: merged token " << shown(left + right)
                     << " is not in model.vocab");
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left_it->second)) << 32) |
                         static_cast<uint32_t>(right_it->second);
    // A repeated pair keeps its last rank, as the crate's HashMap collect does.
    merges[key] = Merge{static_cast<int32_t>(rank), merged_it->second};
  }
}

void BpeTokenizer::Impl::load_added_tokens(const Json& list) {
  DST_CHECK(list.is_array(), DataError, source << ": key 'added_tokens' must be an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& entry = list[i];
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    DST_CHECK(entry.is_object(), DataError, source << ": " << path << " must be an object");
    AddedToken token;
    const std::optional<std::string> content = string_member(entry, "content", source, path);
    DST_CHECK(content.has_value(), DataError, source << ": " << path << ".content is missing");
    token.content = *content;
    const Json* id = member(entry, "id");
    DST_CHECK(id != nullptr, DataError, source << ": " << path << ".id is missing");
    token.id = id_value(*id, source, path + ".id");
    token.single_word = bool_member(entry, "single_word", false, source, path);
    token.lstrip = bool_member(entry, "lstrip", false, source, path);
    token.rstrip = bool_member(entry, "rstrip", false, source, path);
    token.normalized = bool_member(entry, "normalized", true, source, path);
    token.special = bool_member(entry, "special", false, source, path);
    // The crate ignores tokens with empty content.
    if (token.content.empty()) continue;
    const auto in_vocab = vocab.find(token.content);
    DST_CHECK(in_vocab == vocab.end() || in_vocab->second == token.id, DataError,
              source << ": " << path << ": token " << shown(token.content) << " has id " << token.id
                     << " but model.vocab gives it id " << in_vocab->second);
    const auto [previous, inserted] = added_ids.emplace(token.content, token.id);
    DST_CHECK(inserted || previous->second == token.id, DataError,
              source << ": " << path << ": token " << shown(token.content)
                     << " is listed twice with ids " << previous->second << " and " << token.id);
    if (!inserted) continue;
    added_tokens.push_back(token);
  }
}

void BpeTokenizer::Impl::load_normalizer(const Json* normalizer) {
  if (normalizer == nullptr || normalizer->is_null()) return;
  const std::string type = type_of(*normalizer, source, "normalizer");
  if (type == "Sequence") {
    const Json* list = member(*normalizer, "normalizers");
    if (list != nullptr && list->is_array() && list->empty()) return;
  }
  DST_THROW(DataError,
            source << ": normalizer type '" << type << "' is not supported (expected null)");
}

const Regex* BpeTokenizer::Impl::add_regex(const std::string& written, bool is_literal,
                                           const std::string& where) {
  std::string pcre2_pattern;
  if (is_literal) {
    // The crate escapes a String pattern (regex::escape); here: every ASCII punctuation byte.
    for (char c : written) {
      if (std::ispunct(static_cast<unsigned char>(c))) pcre2_pattern.push_back('\\');
      pcre2_pattern.push_back(c);
    }
  } else {
    pcre2_pattern = oniguruma_to_pcre2(written);
  }
  regexes.push_back(std::make_unique<Regex>(written, pcre2_pattern, source, where));
  return regexes.back().get();
}

void BpeTokenizer::Impl::load_pre_tokenizer(const Json& node, const std::string& path) {
  const std::string type = type_of(node, source, path);
  if (type == "Sequence") {
    const Json* list = member(node, "pretokenizers");
    DST_CHECK(list != nullptr && list->is_array(), DataError,
              source << ": key '" << path << ".pretokenizers' is missing or not an array");
    for (size_t i = 0; i < list->size(); ++i) {
      load_pre_tokenizer((*list)[i], path + ".pretokenizers[" + std::to_string(i) + "]");
    }
  } else if (type == "ByteLevel") {
    PreTokenizerStep step;
    step.is_byte_level = true;
    // Defaults of the crate's ByteLevel::default().
    step.add_prefix_space = bool_member(node, "add_prefix_space", true, source, path);
    if (bool_member(node, "use_regex", true, source, path)) {
      // The crate's built-in GPT-2 pattern.
      step.regex = add_regex(
          "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
          false, path);
    }
    steps.push_back(step);
  } else if (type == "Split") {
    PreTokenizerStep step;
    const Json* pattern = member(node, "pattern");
    DST_CHECK(pattern != nullptr && pattern->is_object() && pattern->size() == 1, DataError,
              source << ": key '" << path
                     << ".pattern' must be {\"Regex\": \"...\"} or {\"String\": \"...\"}");
    const std::optional<std::string> regex = string_member(*pattern, "Regex", source, path);
    const std::optional<std::string> literal = string_member(*pattern, "String", source, path);
    DST_CHECK(regex.has_value() || literal.has_value(), DataError,
              source << ": key '" << path
                     << ".pattern' must be {\"Regex\": \"...\"} or {\"String\": \"...\"}");
    step.regex = regex ? add_regex(*regex, false, path + ".pattern.Regex")
                       : add_regex(*literal, true, path + ".pattern.String");
    const std::optional<std::string> behavior = string_member(node, "behavior", source, path);
    DST_CHECK(behavior.has_value(), DataError,
              source << ": key '" << path << ".behavior' is missing");
    static const std::pair<const char*, SplitBehavior> kBehaviors[] = {
        {"Removed", SplitBehavior::kRemoved},
        {"Isolated", SplitBehavior::kIsolated},
        {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
        {"MergedWithNext", SplitBehavior::kMergedWithNext},
        {"Contiguous", SplitBehavior::kContiguous}};
    bool known = false;
    for (const auto& [name, value] : kBehaviors) {
      if (*behavior == name) {
        step.behavior = value;
        known = true;
      }
    }
    DST_CHECK(known, DataError,
              source << ": " << path << ".behavior '" << *behavior
                     << "' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                        "Contiguous");
    step.invert = bool_member(node, "invert", false, source, path);
    steps.push_back(step);
  } else if (type == "Digits") {
    // The crate splits on char::is_numeric (general category N), one match per character.
    PreTokenizerStep step;
    step.regex = add_regex("\\p{N}", false, path);
    step.behavior = bool_member(node, "individual_digits", false, source, path)
                        ? SplitBehavior::kIsolated
                        : SplitBehavior::kContiguous;
    steps.push_back(step);
  } else {
    DST_THROW(DataError, source << ": " << path << " type '" << type
                                << "' is not supported (expected ByteLevel, Split, Digits or "
                                   "Sequence)");
  }
}

void BpeTokenizer::Impl::load_decoder(const Json* decoder) {
  if (decoder == nullptr || decoder->is_null()) return;
  const std::string type = type_of(*decoder, source, "decoder");
  DST_CHECK(
      type == "ByteLevel", DataError,
      source << ": decoder type '" << type << "' is not supported (expected ByteLevel or null)");
  byte_level_decoder = true;
}

void BpeTokenizer::Impl::finish(const std::string& eos_token) {
  byte_chars = gpt2_byte_chars();
  std::unordered_map<uint32_t, unsigned char> byte_of_char;
  for (int b = 0; b < 256; ++b) byte_of_char[byte_chars[b]] = static_cast<unsigned char>(b);

  // Initial symbols of the model: each byte's character, or each character < U+0800.
  std::string text;
  for (int b = 0; b < 256; ++b) {
    text.clear();
    append_utf8(text, byte_chars[b]);
    const auto it = vocab.find(text);
    byte_ids[b] = it == vocab.end() ? -1 : it->second;
  }
  small_char_ids.assign(0x800, -1);
  for (uint32_t c = 0; c < 0x800; ++c) {
    text.clear();
    append_utf8(text, c);
    const auto it = vocab.find(text);
    if (it != vocab.end()) small_char_ids[c] = it->second;
  }

  // A ByteLevel step maps bytes to characters as its last action; when nothing follows it the
  // model reads the raw bytes through byte_ids instead (same ids, no mapped copy).
  model_input_is_raw_bytes = !steps.empty() && steps.back().is_byte_level;

  // Ids: the vocabulary, then added tokens (the crate looks added tokens up first).
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) max_id = std::max(max_id, id);
  for (const AddedToken& token : added_tokens) max_id = std::max(max_id, token.id);
  vocab_size = max_id + 1;
  token_texts.assign(vocab_size, std::string());
  id_kinds.assign(vocab_size, kUnassigned);
  for (const auto& [token, id] : vocab) {
    if (id_kinds[id] == kUnassigned) {
      token_texts[id] = token;
      id_kinds[id] = kRegular;
    }
  }
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const AddedToken& token = added_tokens[i];
    DST_CHECK(id_kinds[token.id] == kUnassigned || token_texts[token.id] == token.content,
              DataError,
              source << ": added token " << shown(token.content) << " has id " << token.id
                     << ", which model.vocab gives to " << shown(token_texts[token.id]));
    token_texts[token.id] = token.content;
    id_kinds[token.id] = token.special ? kSpecial : kRegular;
    (token.normalized ? normalized_trie : non_normalized_trie)
        .insert(token.content, static_cast<int32_t>(i));
  }
  if (std::any_of(added_tokens.begin(), added_tokens.end(),
                  [](const AddedToken& t) { return t.single_word; })) {
    word_char_regex =
        std::make_unique<Regex>("\\w", "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
                                source, "added token word class", PCRE2_ANCHORED);
  }

  // ByteLevel decoder: a token whose characters all belong to the byte alphabet becomes those
  // bytes; any other token (e.g. "<｜end▁of▁sentence｜>") is kept as its UTF-8 text.
  if (byte_level_decoder) {
    decoded_bytes.assign(vocab_size, std::string());
    for (int32_t id = 0; id < vocab_size; ++id) {
      const std::string& token = token_texts[id];
      std::string bytes;
      bool all_mapped = is_valid_utf8(token);
      for (size_t pos = 0; all_mapped && pos < token.size();) {
        const auto it = byte_of_char.find(code_point_at(token, pos));
        if (it == byte_of_char.end()) {
          all_mapped = false;
        } else {
          bytes.push_back(static_cast<char>(it->second));
        }
        pos += utf8_char_length(byte_at(token, pos));
      }
      decoded_bytes[id] = all_mapped ? bytes : token;
    }
  }

  if (!eos_token.empty()) {
    const std::optional<int32_t> id = find_token(eos_token);
    DST_CHECK(id.has_value(), DataError,
              source << ": eos_token " << shown(eos_token) << " is not a token of this file");
    eos_id = *id;
  } else {
    for (const char* candidate :
         {"<|endoftext|>", "<｜end▁of▁sentence｜>", "</s>", "<|end_of_text|>", "<eos>"}) {
      if (const std::optional<int32_t> id = find_token(candidate)) {
        eos_id = *id;
        break;
      }
    }
  }
}

std::optional<int32_t> BpeTokenizer::Impl::find_token(std::string_view token) const {
  const std::string key(token);
  if (const auto it = added_ids.find(key); it != added_ids.end()) return it->second;
  if (const auto it = vocab.find(key); it != vocab.end()) return it->second;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Encoding

bool BpeTokenizer::Impl::is_word_char_at(std::string_view text, size_t pos) const {
  MatchData match_data = new_match_data();
  const size_t length = utf8_char_length(byte_at(text, pos));
  return word_char_regex->search(text.substr(pos, length), 0, match_data.get());
}

bool BpeTokenizer::Impl::is_word_char_before(std::string_view text, size_t end) const {
  return end > 0 && is_word_char_at(text, previous_char_start(text, end));
}

// AddedVocabulary::find_matches of the crate: leftmost-longest token matches (the search goes on
// after a match's end even when single_word rejects it), lstrip/rstrip widening the token over
// adjacent White_Space, the text between matches kept as segments.
void BpeTokenizer::Impl::split_on_added_tokens(std::string_view text, const AddedTokenTrie& trie,
                                               std::vector<Segment>& out) const {
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = 0;
    const int32_t index = trie.longest_at(text, pos, &length);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = added_tokens[index];
    size_t start = pos;
    size_t stop = pos + length;
    pos = stop;
    if (token.single_word) {
      const bool space_before = start == 0 || !is_word_char_before(text, start);
      const bool space_after = stop == text.size() || !is_word_char_at(text, stop);
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        const size_t previous = previous_char_start(text, new_start);
        if (!is_white_space(code_point_at(text, previous))) break;
        new_start = previous;
      }
      // Spaces already taken by the previous match stay with it.
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size() && is_white_space(code_point_at(text, stop))) {
        stop += utf8_char_length(byte_at(text, stop));
      }
    }
    if (start_offset < start) out.push_back({text.substr(start_offset, start - start_offset), -1});
    out.push_back({text.substr(start, stop - start), token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({text.substr(start_offset), -1});
}

void BpeTokenizer::Impl::map_pieces_to_chars(PieceBuffer& buffer) const {
  for (std::string_view& piece : buffer.pieces) {
    std::string mapped;
    mapped.reserve(piece.size() * 2);
    for (char c : piece) append_utf8(mapped, byte_chars[static_cast<unsigned char>(c)]);
    buffer.owned.push_back(std::move(mapped));
    piece = buffer.owned.back();
  }
  buffer.byte_mapping_pending = false;
}

void BpeTokenizer::Impl::pre_tokenize(std::string_view text, PieceBuffer& buffer,
                                      pcre2_match_data* md) const {
  buffer.pieces.clear();
  buffer.owned.clear();
  buffer.byte_mapping_pending = false;
  buffer.pieces.push_back(text);
  for (const PreTokenizerStep& step : steps) {
    if (buffer.byte_mapping_pending) map_pieces_to_chars(buffer);
    buffer.next_pieces.clear();
    for (std::string_view piece : buffer.pieces) {
      if (step.is_byte_level) {
        // The crate prepends the space to every piece that does not start with one.
        if (step.add_prefix_space && piece.front() != ' ') {
          buffer.owned.push_back(" " + std::string(piece));
          piece = buffer.owned.back();
        }
        if (step.regex == nullptr) {
          buffer.next_pieces.push_back(piece);
        } else {
          split_piece(piece, *step.regex, SplitBehavior::kIsolated, false, md, buffer,
                      buffer.next_pieces);
        }
      } else {
        split_piece(piece, *step.regex, step.behavior, step.invert, md, buffer, buffer.next_pieces);
      }
    }
    buffer.pieces.swap(buffer.next_pieces);
    if (step.is_byte_level) buffer.byte_mapping_pending = true;
  }
}

// BPE::merge_word + Word::merge_all of the crate: one symbol per character (unknown ones become
// unk_token, fused if fuse_unk, or are dropped without one), then merges applied lowest rank
// first, leftmost first among equal ranks, through a min-heap of candidate pairs.
void BpeTokenizer::Impl::merge_word(std::string_view word, bool raw_bytes,
                                    std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add_symbol = [&](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  };

  std::optional<int32_t> pending_unk;
  for (size_t pos = 0; pos < word.size();) {
    int32_t id = -1;
    size_t length = 1;
    if (raw_bytes) {
      id = byte_ids[byte_at(word, pos)];
    } else {
      length = utf8_char_length(byte_at(word, pos));
      const uint32_t code_point = code_point_at(word, pos);
      if (code_point < small_char_ids.size()) {
        id = small_char_ids[code_point];
      } else if (const auto it = vocab.find(std::string(word.substr(pos, length)));
                 it != vocab.end()) {
        id = it->second;
      }
    }
    pos += length;
    if (id >= 0) {
      if (pending_unk) add_symbol(*pending_unk);
      pending_unk.reset();
      add_symbol(id);
    } else if (unk_token) {
      const auto unk_it = vocab.find(*unk_token);
      DST_CHECK(unk_it != vocab.end(), DataError,
                source << ": model.unk_token " << shown(*unk_token)
                       << " is needed but is not in model.vocab");
      if (pending_unk && !fuse_unk) add_symbol(*pending_unk);
      pending_unk = unk_it->second;
    }
  }
  if (pending_unk) add_symbol(*pending_unk);

  if (symbols.size() > 1) {
    std::vector<Candidate> heap;
    heap.reserve(symbols.size() * 2);
    const auto comes_later = [](const Candidate& a, const Candidate& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    const auto push = [&](int32_t pos, const Merge& merge) {
      heap.push_back({merge.rank, pos, merge.new_id});
      std::push_heap(heap.begin(), heap.end(), comes_later);
    };
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      if (const Merge* merge = find_merge(symbols[i].id, symbols[i + 1].id)) {
        push(static_cast<int32_t>(i), *merge);
      }
    }
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), comes_later);
      const Candidate top = heap.back();
      heap.pop_back();
      Symbol& current = symbols[top.pos];
      if (!current.alive || current.next < 0) continue;
      const int32_t right_pos = current.next;
      const Symbol right = symbols[right_pos];
      // A stale candidate: the pair at this position changed since it was queued.
      const Merge* still = find_merge(current.id, right.id);
      if (still == nullptr || still->new_id != top.new_id) continue;
      current.id = top.new_id;
      current.next = right.next;
      symbols[right_pos].alive = false;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      if (current.prev >= 0) {
        if (const Merge* merge = find_merge(symbols[current.prev].id, current.id)) {
          push(current.prev, *merge);
        }
      }
      if (current.next >= 0) {
        if (const Merge* merge = find_merge(current.id, symbols[current.next].id)) {
          push(top.pos, *merge);
        }
      }
    }
  }
  for (const Symbol& symbol : symbols) {
    if (symbol.alive) out.push_back(symbol.id);
  }
}

void BpeTokenizer::Impl::encode_word(std::string_view word, bool raw_bytes,
                                     std::vector<int32_t>& out) const {
  if (ignore_merges) {
    // LLaMA-3 style: a word that is itself in the vocabulary is emitted as is.
    std::string mapped;
    if (raw_bytes) {
      for (char c : word) append_utf8(mapped, byte_chars[static_cast<unsigned char>(c)]);
    } else {
      mapped = std::string(word);
    }
    if (const auto it = vocab.find(mapped); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (raw_bytes && word.size() == 1) {
    const int32_t id = byte_ids[byte_at(word, 0)];
    if (id >= 0 || !unk_token) {
      if (id >= 0) out.push_back(id);
      return;
    }
  }
  if (word.size() >= kMaxCachedWordBytes) {
    merge_word(word, raw_bytes, out);
    return;
  }
  std::string key(word);
  const size_t hash = std::hash<std::string>{}(key);
  if (cache.append_cached(key, hash, out)) return;
  const size_t first = out.size();
  merge_word(word, raw_bytes, out);
  cache.store(std::move(key), hash, std::vector<int32_t>(out.begin() + first, out.end()));
}

std::vector<int32_t> BpeTokenizer::Impl::encode(std::string_view input) const {
  std::vector<int32_t> ids;
  if (input.empty()) return ids;
  // Regexes run with PCRE2_NO_UTF_CHECK, so the text is made valid UTF-8 first.
  std::string repaired;
  std::string_view text = input;
  if (!is_valid_utf8(input)) {
    repaired = lossy_utf8(input);
    text = repaired;
  }
  ids.reserve(text.size() / 3 + 16);

  // AddedVocabulary::extract_and_normalize: tokens with normalized=false are cut from the raw
  // text first, then tokens with normalized=true from what is left (no normalizer here).
  std::vector<Segment> segments;
  if (non_normalized_trie.empty()) {
    segments.push_back({text, -1});
  } else {
    split_on_added_tokens(text, non_normalized_trie, segments);
  }
  if (!normalized_trie.empty()) {
    std::vector<Segment> refined;
    for (const Segment& segment : segments) {
      if (segment.added_id >= 0) {
        refined.push_back(segment);
      } else {
        split_on_added_tokens(segment.text, normalized_trie, refined);
      }
    }
    segments.swap(refined);
  }

  MatchData match_data = new_match_data();
  PieceBuffer buffer;
  for (const Segment& segment : segments) {
    if (segment.added_id >= 0) {
      ids.push_back(segment.added_id);
      continue;
    }
    if (segment.text.empty()) continue;
    pre_tokenize(segment.text, buffer, match_data.get());
    const bool raw_bytes = buffer.byte_mapping_pending;
    for (std::string_view piece : buffer.pieces) encode_word(piece, raw_bytes, ids);
  }
  return ids;
}

std::string BpeTokenizer::Impl::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  bool first = true;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    DST_CHECK(id >= 0 && id < vocab_size && id_kinds[id] != kUnassigned, DataError,
              source << ": token id " << id << " at position " << i << " is not in the vocabulary ("
                     << vocab_size << " ids)");
    if (skip_special && id_kinds[id] == kSpecial) continue;
    if (byte_level_decoder) {
      bytes += decoded_bytes[id];
    } else {
      // No decoder: the crate joins the token strings with spaces.
      if (!first) bytes.push_back(' ');
      bytes += token_texts[id];
    }
    first = false;
  }
  return lossy_utf8(bytes);
}

// =============================================================================================

namespace {

std::string read_tokenizer_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DST_CHECK(in.good(), DataError,
            path << ": cannot open tokenizer file (" << std::strerror(errno) << ")");
  std::ostringstream contents;
  contents << in.rdbuf();
  DST_CHECK(!in.bad(), DataError, path << ": cannot read tokenizer file");
  return contents.str();
}

}  // namespace

BpeTokenizer::BpeTokenizer(const std::string& path, const std::string& eos_token)
    : impl_(std::make_unique<Impl>(read_tokenizer_file(path), path, eos_token)) {}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_json_text(const std::string& json_text,
                                                           const std::string& name,
                                                           const std::string& eos_token) {
  return std::unique_ptr<BpeTokenizer>(
      new BpeTokenizer(std::make_unique<Impl>(json_text, name, eos_token)));
}

BpeTokenizer::~BpeTokenizer() = default;

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  return impl_->encode(text);
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  return impl_->decode(ids, skip_special);
}

int32_t BpeTokenizer::vocab_size() const { return impl_->vocab_size; }

int32_t BpeTokenizer::eos_id() const { return impl_->eos_id; }

std::optional<int32_t> BpeTokenizer::token_to_id(const std::string& token) const {
  return impl_->find_token(token);
}

std::string BpeTokenizer::fingerprint() const { return impl_->file_sha256; }

std::string BpeTokenizer::describe() const {
  return "bpe:" + impl_->source + " (" + std::to_string(impl_->vocab_size) + " ids)";
}

}  // namespace dst

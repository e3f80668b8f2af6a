// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json. The encode pipeline follows
// the Rust `tokenizers` crate step by step: added tokens are cut out of the raw text, every other
// segment goes through the pre-tokenizer steps (each splits every current piece further), and
// each final piece is BPE-merged. Regexes run on PCRE2 with the Oniguruma escapes the crate's
// patterns rely on translated (see oniguruma_to_pcre2).
// This file encodes and decodes; bpe_tokenizer_load.cpp reads tokenizer.json into the Impl
// (bpe_tokenizer_impl.h).
#include "deepseek_train/data/bpe_tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/bpe_tokenizer_impl.h"
#include "deepseek_train/core/error.h"

namespace dst {

using detail::AddedToken;
using detail::AddedTokenTrie;
using detail::append_utf8;
using detail::byte_at;
using detail::code_point_at;
using detail::is_valid_utf8;
using detail::is_white_space;
using detail::kMaxCachedWordBytes;
using detail::lossy_utf8;
using detail::MatchData;
using detail::new_match_data;
using detail::PieceBuffer;
using detail::PreTokenizerStep;
using detail::previous_char_start;
using detail::Regex;
using detail::Segment;
using detail::shown;
using detail::Span;
using detail::SplitBehavior;
using detail::utf8_char_length;

namespace {

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

}  // namespace

// =============================================================================================

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

std::string BpeTokenizer::token_bytes(int32_t id) const {
  DST_CHECK(id >= 0 && id < impl_->vocab_size, DataError,
            impl_->source << ": token id " << id << " is not in the vocabulary");
  for (const detail::AddedToken& added : impl_->added_tokens)
    if (added.id == id) return added.content;  // matched in the raw text, as written
  return impl_->byte_level_decoder ? impl_->decoded_bytes[id] : impl_->token_texts[id];
}

std::optional<int32_t> BpeTokenizer::token_to_id(const std::string& token) const {
  return impl_->find_token(token);
}

std::string BpeTokenizer::fingerprint() const { return impl_->file_sha256; }

std::string BpeTokenizer::describe() const {
  return "bpe:" + impl_->source + " (" + std::to_string(impl_->vocab_size) + " ids)";
}

}  // namespace dst

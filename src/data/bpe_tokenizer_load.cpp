// Loading of a Hugging Face tokenizer.json into BpeTokenizer::Impl: the BPE model, added tokens,
// normalizer, pre-tokenizer steps and decoder, each checked with messages naming the file and
// key, then the per-id tables the encoder and decoder use.
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/bpe_tokenizer_impl.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/core/sha256.h"

namespace dst {

using detail::AddedToken;
using detail::append_utf8;
using detail::byte_at;
using detail::code_point_at;
using detail::is_valid_utf8;
using detail::oniguruma_to_pcre2;
using detail::PreTokenizerStep;
using detail::Regex;
using detail::shown;
using detail::SplitBehavior;
using detail::utf8_char_length;

namespace {

using Json = nlohmann::json;

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

}  // namespace dst

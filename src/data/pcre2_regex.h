// PCRE2 regexes of the BPE tokenizer: the translation of the Oniguruma escapes that the
// `tokenizers` crate's patterns rely on, and `Regex`, a compiled pattern (RAII) whose matches are
// iterated the way the crate iterates Oniguruma matches.
#pragma once

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "data/utf8.h"

namespace dst::detail {

// A pattern as the crate's Oniguruma reads it, rewritten for PCRE2 (see pcre2_regex.cpp).
std::string oniguruma_to_pcre2(const std::string& pattern);

struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

MatchData new_match_data();

// A compiled pattern; immutable, so one object serves all threads (each passes its own match
// data).
class Regex {
 public:
  // `written` is the pattern as the file has it (for messages); `where` names its JSON key.
  Regex(const std::string& written, const std::string& pcre2_pattern, const std::string& source,
        const std::string& where, uint32_t extra_options = 0);

  // Whether the pattern matches `subject` at `offset`; the match is in match_data's ovector.
  // `subject` must be valid UTF-8 (checked by the caller once for the whole input).
  bool search(std::string_view subject, size_t offset, pcre2_match_data* match_data) const;

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

}  // namespace dst::detail

// Oniguruma-to-PCRE2 pattern translation and the Regex wrapper (see pcre2_regex.h).
#include "data/pcre2_regex.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include "data/unicode_categories.h"
#include "deepseek_train/core/error.h"

namespace dst::detail {

namespace {

// The crate compiles pre-tokenizer patterns with Oniguruma (Ruby syntax). PCRE2 reads them the
// same way except for a few escapes, rewritten here:
//  - \s \S: Oniguruma's Unicode White_Space set; PCRE2's \s also takes U+180E.
//  - \w \W (outside a class, and \w inside one): Oniguruma's Letter|Mark|Number|Connector_Punct.
//  - \h \H: a hex digit in Oniguruma (horizontal space in PCRE2).
//  - \uHHHH: PCRE2 spells it \x{HHHH}.
//  - \p{..} \P{..} \p{^..} \pX of a general category: explicit ranges at the crate's Unicode
//    version (unicode_categories.h), not PCRE2's (Debian 12: Unicode 14, the crate: 16).
// `^`/`$` match at line boundaries in Oniguruma's default syntax; the regex is compiled with
// PCRE2_MULTILINE and LF newlines for that.
const char kWhiteSpaceItems[] =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";
const char kNonWhiteSpaceItems[] =
    "\\x{0}-\\x{8}\\x{E}-\\x{1F}\\x{21}-\\x{84}\\x{86}-\\x{9F}\\x{A1}-\\x{167F}"
    "\\x{1681}-\\x{1FFF}\\x{200B}-\\x{2027}\\x{202A}-\\x{202E}\\x{2030}-\\x{205E}"
    "\\x{2060}-\\x{2FFF}\\x{3001}-\\x{10FFFF}";
const char kHexItems[] = "0-9A-Fa-f";
const char kNonHexItems[] = "\\x{0}-/:-@G-`g-\\x{10FFFF}";

bool is_hex_digit(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

// Oniguruma's \w: Letter | Mark | Number | Connector_Punctuation.
const std::vector<CodePointRange>& word_ranges() {
  static const std::vector<CodePointRange> ranges = [] {
    std::vector<CodePointRange> all;
    for (const char* category : {"L", "M", "N", "Pc"}) {
      const auto part = general_category_ranges(category);
      all.insert(all.end(), part->begin(), part->end());
    }
    return merge_ranges(std::move(all));
  }();
  return ranges;
}

// A property escape at pattern[i] ('p' or 'P'): \p{Name}, \p{^Name}, \P{Name} or \pX. Sets
// `ranges` (the set it matches, negation applied) and `length` (characters after the
// backslash) when it names a general category.
bool general_category_escape(const std::string& pattern, size_t i,
                             std::vector<CodePointRange>& ranges, size_t& length) {
  bool negate = pattern[i] == 'P';
  std::string name;
  if (i + 1 < pattern.size() && pattern[i + 1] == '{') {
    const size_t close = pattern.find('}', i + 2);
    if (close == std::string::npos) return false;
    name = pattern.substr(i + 2, close - i - 2);
    length = close - i + 1;
    if (!name.empty() && name[0] == '^') {
      negate = !negate;
      name.erase(0, 1);
    }
  } else if (i + 1 < pattern.size()) {
    name = pattern.substr(i + 1, 1);
    length = 2;
  }
  const auto found = general_category_ranges(name);
  if (!found) return false;
  ranges = negate ? complement(*found) : *found;
  return true;
}

}  // namespace

std::string oniguruma_to_pcre2(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  // True right after "[" or "[^", where "]" is a literal.
  bool at_class_start = false;
  // Writes a set of class items: bare inside a class, as [items] or [^items] outside.
  const auto class_item = [&](const std::string& items, bool negate) {
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
          class_item(pcre2_class_items(word_ranges()), false);
          break;
        case 'W':
          class_item(pcre2_class_items(in_class ? complement(word_ranges()) : word_ranges()),
                     !in_class);
          break;
        case 'p':
        case 'P': {
          std::vector<CodePointRange> ranges;
          size_t length = 0;
          if (general_category_escape(pattern, i, ranges, length)) {
            class_item(pcre2_class_items(ranges), false);
            i += length - 1;
          } else {
            out.push_back('\\');
            out.push_back(escaped);
          }
          break;
        }
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

MatchData new_match_data() {
  MatchData data(pcre2_match_data_create(1, nullptr));
  DST_CHECK(data != nullptr, InternalError, "out of memory creating PCRE2 match data");
  return data;
}

namespace {

std::string pcre2_message(int error_code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(error_code, buffer, sizeof(buffer)) < 0) {
    return "PCRE2 error " + std::to_string(error_code);
  }
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

Regex::Regex(const std::string& written, const std::string& pcre2_pattern,
             const std::string& source, const std::string& where, uint32_t extra_options)
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

bool Regex::search(std::string_view subject, size_t offset, pcre2_match_data* match_data) const {
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

}  // namespace dst::detail

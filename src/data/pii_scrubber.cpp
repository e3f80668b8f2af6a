// PII scrubbing with PCRE2 (JIT): one compiled pattern per kind, applied in a fixed order, with
// C++ checks for what a regular expression cannot express well (digit counts, Luhn checksums).
#include "deepseek_train/data/pii_scrubber.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <set>

#include "deepseek_train/core/error.h"

namespace dst {

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------

namespace {

// Length of the well-formed UTF-8 sequence at p (n bytes available), or 0 when ill-formed.
size_t utf8_sequence_length(const unsigned char* p, size_t n) {
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  auto continuation = [](unsigned char b) { return (b & 0xC0) == 0x80; };
  if (c < 0xE0) return n >= 2 && continuation(p[1]) ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3) return 0;
    const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80;  // no overlong forms
    const unsigned char hi = c == 0xED ? 0x9F : 0xBF;  // no surrogates
    return p[1] >= lo && p[1] <= hi && continuation(p[2]) ? 3 : 0;
  }
  if (c < 0xF5) {
    if (n < 4) return 0;
    const unsigned char lo = c == 0xF0 ? 0x90 : 0x80;  // no overlong forms
    const unsigned char hi = c == 0xF4 ? 0x8F : 0xBF;  // nothing above U+10FFFF
    return p[1] >= lo && p[1] <= hi && continuation(p[2]) && continuation(p[3]) ? 4 : 0;
  }
  return 0;
}

// Offset of the first ill-formed byte, or text.size() when the text is valid.
size_t first_invalid_utf8(const std::string& text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, p + i, 8);
      if (word & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const size_t length = utf8_sequence_length(p + i, n - i);
    if (length == 0) return i;
    i += length;
  }
  return n;
}

}  // namespace

bool is_valid_utf8(const std::string& text) { return first_invalid_utf8(text) == text.size(); }

std::string make_valid_utf8(std::string text) {
  size_t i = first_invalid_utf8(text);
  if (i == text.size()) return text;
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
  std::string out(text, 0, i);
  out.reserve(text.size() + 16);
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  while (i < n) {
    const size_t length = utf8_sequence_length(p + i, n - i);
    if (length == 0) {
      out += kReplacement;
      ++i;
    } else {
      out.append(text, i, length);
      i += length;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Patterns
// ---------------------------------------------------------------------------------------------

namespace {

// What a match must additionally satisfy, checked in C++.
enum class Check { kNone, kPhone, kCard, kIpv6 };

// Which cheap test on the whole text decides that a pattern cannot match.
struct Prefilter {
  char required_char = 0;  // a byte the text must contain (0: none)
  int min_digits = 0;      // ASCII digits the text must contain
};

struct Pattern {
  std::string kind;
  std::string placeholder;
  Check check = Check::kNone;
  Prefilter prefilter;
  pcre2_code* code = nullptr;
};

// ASCII digits only: with PCRE2_UCP, \d would also match other scripts' digits.
const std::string kOctet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const std::string kIpv4 = "(?:" + kOctet + "\\.){3}" + kOctet;
const std::string kHex = "[0-9A-Fa-f]{1,4}";

std::string email_regex() {
  // local@label.label.tld; the local part starts at a word boundary (no scan inside a word).
  return "(?<![\\w.%+\\-])[\\w.%+\\-]++@(?:\\w(?:[\\w\\-]{0,61}\\w)?\\.)+\\p{L}{2,}"
         "(?![\\w\\-]|\\.\\w)";
}

std::string ipv4_regex() { return "(?<![\\w.])" + kIpv4 + "(?!\\w|\\.[0-9])"; }

std::string ipv6_regex() {
  const std::string h = kHex;
  const std::string alternatives[] = {
      "::(?:[Ff]{4}(?::0{1,4})?:)?" + kIpv4,  // ::ffff:192.0.2.1, ::192.0.2.1
      "(?:" + h + ":){1,4}:" + kIpv4,         // 64:ff9b::192.0.2.1
      "(?:" + h + ":){7}" + h,                // full form
      "(?:" + h + ":){1,7}:",                 // 2001:db8::
      "(?:" + h + ":){1,6}:" + h,
      "(?:" + h + ":){1,5}(?::" + h + "){1,2}",
      "(?:" + h + ":){1,4}(?::" + h + "){1,3}",
      "(?:" + h + ":){1,3}(?::" + h + "){1,4}",
      "(?:" + h + ":){1,2}(?::" + h + "){1,5}",
      h + ":(?::" + h + "){1,6}",
      ":(?::" + h + "){1,7}",  // ::1
  };
  std::string regex = "(?<![\\w:.])(?:";
  for (size_t i = 0; i < std::size(alternatives); ++i) regex += (i ? "|" : "") + alternatives[i];
  return regex + ")(?![\\w:]|\\.[0-9])";
}

std::string card_regex() {
  return "(?<![\\w\\-.,])[0-9](?:[ \\-]?[0-9]){12,18}(?![\\w\\-]|[.,][0-9])";
}

std::string phone_regex() {
  const std::string sep = "[ .\\-]";
  const std::string alternatives[] = {
      // +CC, an optional (area) group, then digit groups: +44 20 7946 0958, +1 (555) 123-4567
      "\\+[0-9]{1,3}(?:" + sep + "?\\([0-9]{1,4}\\))?" + sep + "?[0-9]++(?:" + sep +
          "[0-9]++){0,5}",
      // North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-1234
      "(?:1" + sep + "?)?(?:\\([0-9]{3}\\)" + sep + "?|[0-9]{3}" + sep + ")[0-9]{3}" + sep +
          "[0-9]{4}",
      // National numbers with a trunk prefix 0: (030) 1234 5678, 020 7946 0958, 0171-1234567
      "\\(0[0-9]{1,4}\\)[ \\-]?[0-9]{3,4}[ \\-]?[0-9]{3,4}",
      "0[0-9]{1,4}[ \\-/][0-9]{3,4}[ \\-]?[0-9]{3,4}",
  };
  std::string regex = "(?<![\\w+\\-.])(?:";
  for (size_t i = 0; i < std::size(alternatives); ++i) regex += (i ? "|" : "") + alternatives[i];
  return regex + ")(?![\\w\\-]|[.,/][0-9])";
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int length = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (length < 0) return "PCRE2 error " + std::to_string(code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(length));
}

pcre2_code* compile_pattern(const std::string& kind, const std::string& regex) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.data()), regex.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  DST_CHECK(code != nullptr, ConfigError,
            "PII pattern '" << kind << "': invalid regular expression at offset " << error_offset
                            << ": " << pcre2_message(error_code));
  // JIT is an optimisation: without it (unsupported platform) the interpreter is used.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return code;
}

bool valid_custom_name(const std::string& name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '_'; });
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

bool luhn_valid(const std::string& digits) {
  int sum = 0;
  bool twice = false;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    int d = *it - '0';
    if (twice) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    twice = !twice;
  }
  return sum % 10 == 0;
}

std::string digits_of(const char* begin, const char* end) {
  std::string digits;
  for (const char* p = begin; p != end; ++p)
    if (*p >= '0' && *p <= '9') digits.push_back(*p);
  return digits;
}

bool passes_check(Check check, const char* begin, const char* end) {
  switch (check) {
    case Check::kNone:
      return true;
    case Check::kPhone: {
      const size_t n = digits_of(begin, end).size();
      return n >= 7 && n <= 15;
    }
    case Check::kCard: {
      const std::string digits = digits_of(begin, end);
      if (digits.size() < 13 || digits.size() > 19 || digits[0] == '0') return false;
      if (digits.find_first_not_of(digits[0]) == std::string::npos) return false;  // 4444...
      return luhn_valid(digits);
    }
    case Check::kIpv6:
      // At least one decimal digit: keeps "::" and words like "Cafe::Bad" in prose.
      return std::any_of(begin, end, [](char c) { return c >= '0' && c <= '9'; });
  }
  return true;
}

struct MatchData {
  explicit MatchData(const pcre2_code* code)
      : data(pcre2_match_data_create_from_pattern(code, nullptr)) {
    DST_CHECK(data != nullptr, InternalError, "PII scrubber: out of memory for match data");
  }
  ~MatchData() { pcre2_match_data_free(data); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
  pcre2_match_data* data;
};

// Offset of the UTF-8 character after the one starting at `offset`.
size_t next_char(const std::string& text, size_t offset) {
  ++offset;
  while (offset < text.size() && (static_cast<unsigned char>(text[offset]) & 0xC0) == 0x80)
    ++offset;
  return offset;
}

// Replaces the accepted matches of `pattern` in `text` (valid UTF-8); returns the count.
int64_t replace_all(const Pattern& pattern, std::string& text) {
  MatchData match(pattern.code);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::string out;
  int64_t count = 0;
  size_t copied = 0;  // text[0, copied) is already in out
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(pattern.code, subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                               match.data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    DST_CHECK(rc >= 0, DataError,
              "PII pattern '" << pattern.kind << "': matching failed: " << pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.data);
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    // Empty matches are never replaced; rejected candidates are retried one character later.
    if (end <= begin || !passes_check(pattern.check, text.data() + begin, text.data() + end)) {
      if (begin >= text.size()) break;
      start = next_char(text, begin);
      continue;
    }
    if (count == 0) out.reserve(text.size());
    out.append(text, copied, begin - copied);
    out += pattern.placeholder;
    copied = end;
    start = end;
    ++count;
  }
  if (count > 0) {
    out.append(text, copied, std::string::npos);
    text.swap(out);
  }
  return count;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// PiiScrubber
// ---------------------------------------------------------------------------------------------

struct PiiScrubber::Impl {
  std::vector<Pattern> patterns;
  ~Impl() {
    for (Pattern& p : patterns) pcre2_code_free(p.code);
  }
  void add(const std::string& kind, const std::string& regex, Check check, Prefilter prefilter) {
    Pattern pattern;
    pattern.kind = kind;
    pattern.placeholder = "<" + upper(kind) + ">";
    pattern.check = check;
    pattern.prefilter = prefilter;
    pattern.code = compile_pattern(kind, regex);
    patterns.push_back(std::move(pattern));
  }
};

PiiScrubber::PiiScrubber(const PiiOptions& options) : impl_(std::make_unique<Impl>()) {
  std::set<std::string> names = {kPiiEmail, kPiiPhone, kPiiIpAddress, kPiiCardNumber};
  for (const CustomPiiPattern& custom : options.custom) {
    DST_CHECK(
        valid_custom_name(custom.name), ConfigError,
        "PII pattern '" << custom.name << "': the name must be non-empty letters, digits and '_'");
    DST_CHECK(names.insert(custom.name).second, ConfigError,
              "PII pattern '" << custom.name << "': the name is already used");
    DST_CHECK(!custom.regex.empty(), ConfigError,
              "PII pattern '" << custom.name << "': the regular expression is empty");
    impl_->add(custom.name, custom.regex, Check::kNone, {});
  }
  if (options.emails) impl_->add(kPiiEmail, email_regex(), Check::kNone, {'@', 0});
  if (options.ip_addresses) {
    impl_->add(kPiiIpAddress, ipv6_regex(), Check::kIpv6, {':', 1});
    impl_->add(kPiiIpAddress, ipv4_regex(), Check::kNone, {'.', 4});
  }
  if (options.card_numbers) impl_->add(kPiiCardNumber, card_regex(), Check::kCard, {0, 13});
  if (options.phones) impl_->add(kPiiPhone, phone_regex(), Check::kPhone, {0, 7});
}

PiiScrubber::~PiiScrubber() = default;
PiiScrubber::PiiScrubber(PiiScrubber&&) noexcept = default;
PiiScrubber& PiiScrubber::operator=(PiiScrubber&&) noexcept = default;

bool PiiScrubber::enabled() const { return impl_ && !impl_->patterns.empty(); }

std::vector<std::string> PiiScrubber::kinds() const {
  std::vector<std::string> kinds;
  if (!impl_) return kinds;
  for (const Pattern& p : impl_->patterns)
    if (std::find(kinds.begin(), kinds.end(), p.kind) == kinds.end()) kinds.push_back(p.kind);
  return kinds;
}

std::string PiiScrubber::scrub(std::string text, PiiCounts* counts) const {
  if (!enabled() || text.empty()) return text;
  text = make_valid_utf8(std::move(text));
  int digits = 0;
  for (char c : text) digits += (c >= '0' && c <= '9');
  for (const Pattern& pattern : impl_->patterns) {
    if (digits < pattern.prefilter.min_digits) continue;
    if (pattern.prefilter.required_char != 0 &&
        std::memchr(text.data(), pattern.prefilter.required_char, text.size()) == nullptr)
      continue;
    const int64_t n = replace_all(pattern, text);
    if (n > 0 && counts != nullptr) (*counts)[pattern.kind] += n;
  }
  return text;
}

}  // namespace dst

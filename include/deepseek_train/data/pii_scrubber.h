// Removal of personally identifiable information from corpus text before tokenization
// (`dstrain prepare`): e-mail addresses, phone numbers, IP addresses, payment card numbers and
// user-defined regular expressions are replaced by placeholders such as <EMAIL>. Torch-free; the
// regular-expression engine (PCRE2) stays out of this header.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dst {

// A user pattern: every match of `regex` (PCRE2 syntax, UTF-8 and Unicode properties on) is
// replaced by "<NAME>" (the name upper-cased) and counted under `name`.
struct CustomPiiPattern {
  std::string name;
  std::string regex;
};

struct PiiOptions {
  bool emails = true;        // user.name+tag@example.co.uk -> <EMAIL>
  bool phones = true;        // +44 20 7946 0958, (555) 123-4567, 555-123-4567 -> <PHONE>
  bool ip_addresses = true;  // 192.168.0.1, 2001:db8::1 -> <IP_ADDRESS>
  bool card_numbers = true;  // 13-19 digits, spaces/dashes allowed, Luhn-valid -> <CARD_NUMBER>
  std::vector<CustomPiiPattern> custom;
};

// Replacements per kind ("email", "phone", "ip_address", "card_number", or a custom name).
using PiiCounts = std::map<std::string, int64_t>;

// Kind names of the built-in detectors.
inline constexpr const char* kPiiEmail = "email";
inline constexpr const char* kPiiPhone = "phone";
inline constexpr const char* kPiiIpAddress = "ip_address";
inline constexpr const char* kPiiCardNumber = "card_number";

class PiiScrubber {
 public:
  // Compiles the enabled patterns once (JIT when available). A custom pattern that does not
  // compile, has an empty or duplicate name, or a name other than letters, digits and '_' throws
  // ConfigError naming the pattern (and PCRE2's message with the offset).
  explicit PiiScrubber(const PiiOptions& options = PiiOptions());
  ~PiiScrubber();
  PiiScrubber(PiiScrubber&&) noexcept;
  PiiScrubber& operator=(PiiScrubber&&) noexcept;
  PiiScrubber(const PiiScrubber&) = delete;
  PiiScrubber& operator=(const PiiScrubber&) = delete;

  // Returns `text` with every detected item replaced by its placeholder and, when `counts` is
  // given, adds the number of replacements per kind to it (kinds without a match are not added).
  // Custom patterns run first, then e-mail, IPv6, IPv4, card and phone detection. Invalid UTF-8
  // is first repaired (see make_valid_utf8). Thread-safe: each call uses its own match state.
  std::string scrub(std::string text, PiiCounts* counts = nullptr) const;

  // The kinds this scrubber detects, in the order they are applied.
  std::vector<std::string> kinds() const;
  // False when nothing is enabled (scrub returns its input unchanged).
  bool enabled() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points above
// U+10FFFF).
bool is_valid_utf8(const std::string& text);
// `text` with every ill-formed UTF-8 sequence replaced by U+FFFD (unchanged when valid).
std::string make_valid_utf8(std::string text);

}  // namespace dst

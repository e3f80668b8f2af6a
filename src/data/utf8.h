// UTF-8 helpers of the BPE tokenizer: encoding code points, validating and repairing byte
// strings (as Rust's String::from_utf8_lossy), stepping through characters, Unicode White_Space,
// and the quoted rendering of file text in messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dst::detail {

void append_utf8(std::string& out, uint32_t code_point);

inline unsigned char byte_at(std::string_view text, size_t pos) {
  return static_cast<unsigned char>(text[pos]);
}

bool is_valid_utf8(std::string_view text);

// Rust's String::from_utf8_lossy: each maximal ill-formed subpart becomes U+FFFD.
std::string lossy_utf8(std::string_view bytes);

// Length of the character whose (valid) lead byte is `lead`.
inline size_t utf8_char_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// Code point of the valid UTF-8 character at text[pos].
uint32_t code_point_at(std::string_view text, size_t pos);

// Start of the (valid) UTF-8 character that ends at text[end - 1].
size_t previous_char_start(std::string_view text, size_t end);

// Unicode White_Space, which is what `\s` means both for Oniguruma (the crate's pre-tokenizer
// regexes) and for Rust's regex crate (its added-token lstrip/rstrip rules).
bool is_white_space(uint32_t c);

// A quoted, single-line rendering of file content for error messages.
std::string shown(std::string_view text);

}  // namespace dst::detail

// UTF-8 helpers of the BPE tokenizer (see utf8.h).
#include "data/utf8.h"

#include <cstring>

#include "deepseek_train/core/error.h"

namespace dst::detail {

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

namespace {

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

}  // namespace

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

uint32_t code_point_at(std::string_view text, size_t pos) {
  const unsigned char lead = byte_at(text, pos);
  const size_t length = utf8_char_length(lead);
  if (length == 1) return lead;
  uint32_t code_point = lead & (0x7F >> length);
  for (size_t i = 1; i < length; ++i)
    code_point = (code_point << 6) | (byte_at(text, pos + i) & 0x3F);
  return code_point;
}

size_t previous_char_start(std::string_view text, size_t end) {
  size_t pos = end - 1;
  while (pos > 0 && (byte_at(text, pos) & 0xC0) == 0x80) --pos;
  return pos;
}

bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

std::string shown(std::string_view text) { return "'" + printable(text, 80) + "'"; }

}  // namespace dst::detail

#include "deepseek_train/core/error.h"

#include <cstdio>
#include <cstring>

namespace dst {

std::string printable(std::string_view text, std::size_t max_length) {
  std::string out;
  for (const char c : text) {
    if (out.size() >= max_length) {
      out += "...";
      break;
    }
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      char buffer[8];
      std::snprintf(buffer, sizeof(buffer), "\\x%02x", byte);
      out += buffer;
    } else {
      out += c;
    }
  }
  return out;
}

std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  return text;
}

}  // namespace dst

namespace dst::detail {

std::string with_location(const std::string& message, const char* file, int line) {
  // Keep only the path below src/ or include/ so messages stay short.
  const char* short_file = file;
  for (const char* marker : {"/src/", "/include/", "/tests/"}) {
    if (const char* found = std::strstr(file, marker)) {
      short_file = found + 1;
      break;
    }
  }
  std::ostringstream out;
  out << message << " [" << short_file << ":" << line << "]";
  return out.str();
}

}  // namespace dst::detail

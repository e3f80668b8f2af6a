#include "deepseek_train/core/error.h"

#include <cstring>

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

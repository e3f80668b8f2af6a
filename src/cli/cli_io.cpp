#include "cli_io.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "deepseek_train/core/error.h"

namespace dst::cli {

namespace fs = std::filesystem;

std::string read_all(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DST_CHECK(in.good() && !fs::is_directory(path), DataError, path << ": cannot read file");
  return read_all(in);
}

std::vector<int32_t> parse_ids(const std::string& text, const std::string& source) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  std::string word;
  for (int64_t position = 0; in >> word; ++position) {
    char* end = nullptr;
    const long value = std::strtol(word.c_str(), &end, 10);
    DST_CHECK(*end == '\0' && value >= 0 && value <= INT32_MAX, DataError,
              source << ": token " << position << " ('" << word << "') is not a token id");
    ids.push_back(static_cast<int32_t>(value));
  }
  return ids;
}

void print_ids(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  std::cout << line << "\n";
}

}  // namespace dst::cli

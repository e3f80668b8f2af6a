#include "cli_io.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
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

std::vector<int32_t> hf_token_ids(const std::string& model_dir, const std::string& key) {
  for (const char* name : {"generation_config.json", "config.json"}) {
    const fs::path path = fs::path(model_dir) / name;
    if (!fs::exists(path)) continue;
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(read_file(path.string()));
    } catch (const nlohmann::json::exception& e) {
      DST_THROW(ConfigError, path.string() << ": invalid JSON (" << e.what() << ")");
    }
    if (!config.is_object() || !config.contains(key) || config[key].is_null()) continue;
    const nlohmann::json& value = config[key];
    std::vector<int32_t> ids;
    for (const nlohmann::json& id : value.is_array() ? value : nlohmann::json::array({value})) {
      DST_CHECK(id.is_number_integer(), ConfigError,
                path.string() << ": key '" << key << "' must be an id or a list of ids");
      ids.push_back(id.get<int32_t>());
    }
    return ids;
  }
  return {};
}

void print_ids(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  std::cout << line << "\n";
}

}  // namespace dst::cli

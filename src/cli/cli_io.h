// Small input/output helpers shared by the dstrain subcommands.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

namespace dst::cli {

std::string read_all(std::istream& in);
// The whole file; DataError naming it when it cannot be read.
std::string read_file(const std::string& path);
// Whitespace-separated token ids; DataError naming `source` and the position of a bad one.
std::vector<int32_t> parse_ids(const std::string& text, const std::string& source);
// The ids `key` ("eos_token_id", "bos_token_id": an id or a list of ids) names in a Hugging Face
// folder's generation_config.json, else its config.json; empty when neither does. ConfigError
// naming the file for invalid JSON or a value that is not an id or a list of ids.
std::vector<int32_t> hf_token_ids(const std::string& model_dir, const std::string& key);
// The ids on one line of stdout, space-separated.
void print_ids(const std::vector<int32_t>& ids);

}  // namespace dst::cli

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
// The ids on one line of stdout, space-separated.
void print_ids(const std::vector<int32_t>& ids);

}  // namespace dst::cli

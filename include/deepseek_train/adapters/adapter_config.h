// One entry of a recipe's `adapters:` list, kept as plain values so that the recipe module (the
// only one that knows YAML) can fill it and any adapter type, built in or registered by a
// program, can read its own keys with one-line errors. Torch-free.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

namespace dst {

struct AdapterConfig {
  std::string type;                            // registry name: "lora", "prefix", or a user type
  std::string where;                           // "recipe.yaml: adapters[0]" for error messages
  std::map<std::string, std::string> scalars;  // key -> value as written
  std::map<std::string, std::vector<std::string>> lists;  // key -> sequence of scalars

  bool has(const std::string& key) const { return scalars.count(key) || lists.count(key); }
  // Typed reads; ConfigError "<where>.<key>: expected ..., got '...'" on a bad value.
  std::string string_or(const std::string& key, const std::string& fallback) const;
  double number_or(const std::string& key, double fallback) const;
  int64_t integer_or(const std::string& key, int64_t fallback) const;
  bool boolean_or(const std::string& key, bool fallback) const;
  // A sequence key (a scalar is not accepted: callers that take either check is_list()).
  std::vector<std::string> list_or(const std::string& key,
                                   const std::vector<std::string>& fallback) const;
  bool is_list(const std::string& key) const { return lists.count(key) > 0; }
  // ConfigError naming the first key that is neither `type` nor one of `known`.
  void check_keys(std::initializer_list<const char*> known) const;
};

}  // namespace dst

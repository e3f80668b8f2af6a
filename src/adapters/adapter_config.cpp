// Typed access to an adapter's recipe entry.
#include "deepseek_train/adapters/adapter_config.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

[[noreturn]] void bad_value(const AdapterConfig& c, const std::string& key, const char* expected,
                            const std::string& value) {
  DST_THROW(ConfigError,
            c.where << "." << key << ": expected " << expected << ", got '" << value << "'");
}

// The scalar written for `key` (null when absent); a list there is an error.
const std::string* scalar(const AdapterConfig& c, const std::string& key) {
  DST_CHECK(!c.lists.count(key), ConfigError, c.where << "." << key << ": expected a single value");
  auto found = c.scalars.find(key);
  return found == c.scalars.end() ? nullptr : &found->second;
}

}  // namespace

std::string AdapterConfig::string_or(const std::string& key, const std::string& fallback) const {
  const std::string* value = scalar(*this, key);
  return value ? *value : fallback;
}

double AdapterConfig::number_or(const std::string& key, double fallback) const {
  const std::string* value = scalar(*this, key);
  if (!value) return fallback;
  char* end = nullptr;
  const double number = std::strtod(value->c_str(), &end);
  if (value->empty() || *end != '\0') bad_value(*this, key, "a number", *value);
  return number;
}

int64_t AdapterConfig::integer_or(const std::string& key, int64_t fallback) const {
  const std::string* value = scalar(*this, key);
  if (!value) return fallback;
  char* end = nullptr;
  const long long number = std::strtoll(value->c_str(), &end, 10);
  if (value->empty() || *end != '\0') bad_value(*this, key, "an integer", *value);
  return number;
}

bool AdapterConfig::boolean_or(const std::string& key, bool fallback) const {
  const std::string* value = scalar(*this, key);
  if (!value) return fallback;
  const std::string& v = *value;
  if (v == "true" || v == "True" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "False" || v == "no" || v == "off") return false;
  bad_value(*this, key, "true or false", v);
}

std::vector<std::string> AdapterConfig::list_or(const std::string& key,
                                                const std::vector<std::string>& fallback) const {
  auto found = lists.find(key);
  if (found != lists.end()) return found->second;
  DST_CHECK(!scalars.count(key), ConfigError, where << "." << key << ": expected a list");
  return fallback;
}

void AdapterConfig::check_keys(std::initializer_list<const char*> known) const {
  auto check = [&](const std::string& key) {
    if (key == "type") return;
    if (std::any_of(known.begin(), known.end(), [&](const char* k) { return key == k; })) return;
    std::ostringstream names;
    for (const char* k : known) names << (names.tellp() > 0 ? ", " : "") << k;
    DST_THROW(ConfigError, where << ": unknown key '" << key << "' for adapter type '" << type
                                 << "' (expected " << names.str() << ")");
  };
  for (const auto& item : scalars) check(item.first);
  for (const auto& item : lists) check(item.first);
}

}  // namespace dst

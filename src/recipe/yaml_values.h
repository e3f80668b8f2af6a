// Private to the recipe module: where a recipe value came from (file:line, or the override that
// set it) and the strict typed reads and exact writes of YAML scalars that recipe.cpp's field
// tables use — one-line ConfigErrors naming the key, the expected type and what was found.
#pragma once

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "deepseek_train/core/error.h"

namespace dst::recipe_yaml {

// Removes the " [file:line]" suffix DST_THROW appends, so a wrapped error carries one location.
inline std::string strip_location(const std::string& message) {
  if (!message.empty() && message.back() == ']') {
    const auto open = message.rfind(" [");
    if (open != std::string::npos) return message.substr(0, open);
  }
  return message;
}

// Where the document came from: used to attribute errors to "file:line" or to an override.
struct Context {
  std::string source;
  std::filesystem::path base_dir;                // directory of the recipe file
  std::map<std::string, std::string> overrides;  // dotted key -> override text (last one wins)

  const std::string* override_for(const std::string& dotted) const {
    const auto it = overrides.find(dotted);
    return it == overrides.end() ? nullptr : &it->second;
  }

  // "override '<text>'" when the key (or a section above it) was set by an override, else
  // "<source>:<line>"; nodes without a mark (created by overrides) fall back to an override below
  // the key, then to "<source>".
  std::string where(const std::string& dotted, const YAML::Mark& mark) const {
    for (std::string key = dotted;;) {
      if (const std::string* text = override_for(key)) return "override '" + one_line(*text) + "'";
      const auto dot = key.rfind('.');
      if (dot == std::string::npos) break;
      key.resize(dot);
    }
    if (mark.is_null()) {
      const std::string prefix = dotted + ".";
      for (const auto& [key, text] : overrides) {
        if (key.compare(0, prefix.size(), prefix) == 0) return "override '" + one_line(text) + "'";
      }
      return source;
    }
    return source + ":" + std::to_string(mark.line + 1);
  }

  [[noreturn]] void fail(const std::string& dotted, const YAML::Mark& mark,
                         const std::string& message) const {
    DST_THROW(ConfigError, where(dotted, mark) << ": " << one_line(message));
  }
};

// One value being read: its node, the full dotted key and the mark of its key (the value's own mark
// can point past the key's line for empty values, so errors use the key's line).
struct Value {
  const YAML::Node& node;
  std::string dotted;
  YAML::Mark mark;
  const Context& ctx;

  [[noreturn]] void fail(const std::string& message) const { ctx.fail(dotted, mark, message); }

  [[noreturn]] void wrong_type(const char* expected) const {
    std::string got;
    switch (node.Type()) {
      case YAML::NodeType::Scalar:
        got = "'" + node.Scalar() + "'";
        break;
      case YAML::NodeType::Sequence:
        got = "a sequence";
        break;
      case YAML::NodeType::Map:
        got = "a mapping";
        break;
      default:
        got = "null";
        break;
    }
    fail("key '" + dotted + "' expects " + expected + ", got " + got);
  }
};

inline bool is_digits(const std::string& text, size_t from) {
  if (from >= text.size()) return false;
  for (size_t i = from; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
  }
  return true;
}

template <typename T>
T read_integer(const Value& v) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  if (!v.node.IsScalar()) v.wrong_type("an integer");
  std::string text = v.node.Scalar();
  if (!text.empty() && text[0] == '+') text.erase(0, 1);
  if (!is_digits(text, !text.empty() && text[0] == '-' ? 1 : 0)) v.wrong_type("an integer");
  T result{};
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), result);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    v.fail("key '" + v.dotted + "' expects an integer in [" +
           std::to_string(std::numeric_limits<T>::min()) + ", " +
           std::to_string(std::numeric_limits<T>::max()) + "], got '" + v.node.Scalar() + "'");
  }
  return result;
}

inline double read_double(const Value& v) {
  if (!v.node.IsScalar()) v.wrong_type("a number");
  std::string text = v.node.Scalar();
  // YAML 1.2 core schema spellings of infinity and NaN.
  for (const char* inf : {".inf", ".Inf", ".INF"}) {
    if (text == inf || text == std::string("+") + inf)
      return std::numeric_limits<double>::infinity();
    if (text == std::string("-") + inf) return -std::numeric_limits<double>::infinity();
  }
  if (text == ".nan" || text == ".NaN" || text == ".NAN") {
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (!text.empty() && text[0] == '+') text.erase(0, 1);
  const bool plausible = text.find_first_not_of("0123456789+-.eE") == std::string::npos &&
                         text.find_first_of("0123456789") != std::string::npos;
  if (!plausible) v.wrong_type("a number");
  double result = 0.0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), result);
  if (ec == std::errc::result_out_of_range) {
    v.fail("key '" + v.dotted + "' has a number out of range: '" + v.node.Scalar() + "'");
  }
  if (ec != std::errc() || ptr != text.data() + text.size()) v.wrong_type("a number");
  return result;
}

inline bool read_bool(const Value& v) {
  if (v.node.IsScalar() && v.node.Scalar() == "true") return true;
  if (v.node.IsScalar() && v.node.Scalar() == "false") return false;
  v.wrong_type("a boolean (true or false)");
}

inline std::string read_string(const Value& v) {
  if (!v.node.IsScalar()) v.wrong_type("a string");
  return v.node.Scalar();
}

// Typed read/emit, chosen by the member's type.
template <typename T>
T read_as(const Value& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return read_bool(v);
  } else if constexpr (std::is_integral_v<T>) {
    return read_integer<T>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    return read_double(v);
  } else {
    static_assert(std::is_same_v<T, std::string>);
    return read_string(v);
  }
}

// Shortest text that reads back to exactly the same double.
inline std::string format_double(double value) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  char buffer[64];
  const auto [ptr, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  DST_ASSERT(ec == std::errc(), "to_chars failed for a double");
  return std::string(buffer, ptr);
}

// yaml-cpp writes a carriage return into a plain or single-quoted scalar as it is, and the parser
// then reads it as a line break ("a\r" comes back as "a"); a double-quoted scalar escapes it.
inline void emit_text(YAML::Emitter& out, const std::string& text) {
  if (text.find('\r') != std::string::npos) out << YAML::DoubleQuoted;
  out << text;
}

inline void emit_texts(YAML::Emitter& out, const std::vector<std::string>& texts) {
  out << YAML::Flow << YAML::BeginSeq;
  for (const std::string& text : texts) emit_text(out, text);
  out << YAML::EndSeq;
}

template <typename T>
void emit_as(YAML::Emitter& out, const T& value) {
  if constexpr (std::is_floating_point_v<T>) {
    out << format_double(value);
  } else if constexpr (std::is_same_v<T, std::string>) {
    emit_text(out, value);
  } else {
    out << value;
  }
}

}  // namespace dst::recipe_yaml

#include "data/jinja_value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "data/utf8.h"

namespace dst::jinja {

namespace {

bool is_number(const Json& v) { return v.is_number() || v.is_boolean(); }
bool is_int(const Json& v) { return v.is_number_integer() || v.is_boolean(); }
int64_t as_int(const Json& v) {
  return v.is_boolean() ? (v.get<bool>() ? 1 : 0) : v.get<int64_t>();
}
double as_double(const Json& v) { return v.is_number_float() ? v.get<double>() : as_int(v); }

std::string hex(uint32_t c, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%0*x", digits, c);
  return buf;
}

// Python's str.isprintable() for the characters repr() escapes (an approximation: controls,
// separators other than space, and the common format characters).
bool printable(uint32_t c) {
  if (c < 0x20 || (c >= 0x7F && c < 0xA0)) return false;
  if (c == 0xAD || c == 0x61C || c == 0x180E || c == 0xFEFF) return false;
  if ((c >= 0x200B && c <= 0x200F) || (c >= 0x202A && c <= 0x202E)) return false;
  if (c >= 0x2060 && c <= 0x206F) return false;
  return c == ' ' || !is_space(c);
}

std::string repr_string(const std::string& s) {
  const bool double_quote = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char quote = double_quote ? '"' : '\'';
  std::string out(1, quote);
  for (uint32_t c : code_points(s)) {
    if (c == '\\' || c == static_cast<uint32_t>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n' || c == '\r' || c == '\t') {
      out += c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t";
    } else if (!printable(c)) {
      out += c < 0x100 ? "\\x" + hex(c, 2) : c < 0x10000 ? "\\u" + hex(c, 4) : "\\U" + hex(c, 8);
    } else {
      detail::append_utf8(out, c);
    }
  }
  return out + quote;
}

std::string dumps_string(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += c < 0x20 ? "\\u" + hex(c, 4) : std::string(1, ch);
    }
  }
  return out + "\"";
}

void dumps_to(std::string& out, const Json& v, int indent, bool sort_keys, int depth) {
  const bool container = v.is_array() || v.is_object();
  if (!container) {
    if (v.is_string())
      out += dumps_string(v.get_ref<const std::string&>());
    else if (v.is_number_float())
      out += float_repr(v.get<double>());
    else
      out += v.dump();
    return;
  }
  if (v.empty()) {
    out += v.is_array() ? "[]" : "{}";
    return;
  }
  const std::string newline =
      indent < 0 ? "" : "\n" + std::string(static_cast<size_t>(indent * (depth + 1)), ' ');
  std::vector<std::pair<std::string, const Json*>> items;
  for (auto it = v.begin(); it != v.end(); ++it)
    items.emplace_back(v.is_object() ? it.key() : "", &*it);
  if (sort_keys && v.is_object())
    std::stable_sort(items.begin(), items.end(),
                     [](auto& a, auto& b) { return a.first < b.first; });
  out += v.is_array() ? "[" : "{";
  for (size_t i = 0; i < items.size(); ++i) {
    out += i == 0 ? newline : (indent < 0 ? ", " : "," + newline);
    if (v.is_object()) out += dumps_string(items[i].first) + ": ";
    dumps_to(out, *items[i].second, indent, sort_keys, depth + 1);
  }
  if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent * depth), ' ');
  out += v.is_array() ? "]" : "}";
}

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  throw EvalError("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" +
                  type_name(b) + "'");
}

Json repeat(const Json& seq, int64_t n) {
  Json out = seq.is_string() ? Json("") : Json::array();
  for (int64_t i = 0; i < n; ++i) {
    if (seq.is_string())
      out.get_ref<std::string&>() += seq.get_ref<const std::string&>();
    else
      for (const Json& x : seq) out.push_back(x);
  }
  return out;
}

Value int_arithmetic(const std::string& op, int64_t x, int64_t y) {
  if ((op == "//" || op == "%") && y == 0) throw EvalError("integer division or modulo by zero");
  if (op == "+") return Json(x + y);
  if (op == "-") return Json(x - y);
  if (op == "*") return Json(x * y);
  if (op == "//") return Json(x / y - ((x % y != 0) && ((x < 0) != (y < 0)) ? 1 : 0));
  if (op == "%") return Json(((x % y) + y) % y);
  if (y >= 0) {  // **
    int64_t r = 1;
    for (int64_t i = 0; i < y; ++i) r *= x;
    return Json(r);
  }
  return Json(std::pow(static_cast<double>(x), static_cast<double>(y)));
}

Value float_arithmetic(const std::string& op, double x, double y) {
  if ((op == "/" || op == "//" || op == "%") && y == 0) throw EvalError("float division by zero");
  if (op == "+") return Json(x + y);
  if (op == "-") return Json(x - y);
  if (op == "*") return Json(x * y);
  if (op == "/") return Json(x / y);
  if (op == "//") return Json(std::floor(x / y));
  if (op == "%") {
    const double r = std::fmod(x, y);
    return Json(r != 0 && ((r < 0) != (y < 0)) ? r + y : r);
  }
  return Json(std::pow(x, y));
}

}  // namespace

Value Value::undefined(std::string hint) {
  Value v;
  v.hint_ = std::move(hint);
  return v;
}

Value Value::string(std::string text, Taints taints) {
  Value v{Json(std::move(text))};
  v.taints_ = std::move(taints);
  return v;
}

Value Value::function(std::string name) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.hint_ = std::move(name);
  return v;
}

Value Value::make_namespace(Namespace attrs) {
  Value v;
  v.kind_ = Kind::kNamespace;
  v.namespace_ = std::make_shared<Namespace>(std::move(attrs));
  return v;
}

Json Value::to_json() const {
  if (kind_ == Kind::kData) return data_;
  if (kind_ == Kind::kUndefined) return nullptr;
  throw EvalError("Object of type " + type_name(*this) + " is not JSON serializable");
}

bool truthy(const Value& v) {
  if (v.kind() != Value::Kind::kData) return !v.is_undefined();
  const Json& d = v.data();
  if (d.is_null()) return false;
  if (d.is_boolean()) return d.get<bool>();
  if (d.is_number_float()) return d.get<double>() != 0.0;
  if (d.is_number()) return as_int(d) != 0;
  if (d.is_string()) return !d.get_ref<const std::string&>().empty();
  return !d.empty();  // arrays, objects
}

std::string to_str(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kFunction:
      return "<function " + v.hint() + ">";
    case Value::Kind::kNamespace: {
      std::string out = "<Namespace {";
      for (size_t i = 0; i < v.attrs().size(); ++i)
        out += (i ? ", " : "") + repr_string(v.attrs()[i].first) + ": " +
               repr(v.attrs()[i].second.to_json());
      return out + "}>";
    }
    case Value::Kind::kData:
      break;
  }
  return v.data().is_string() ? v.str() : repr(v.data());
}

Value to_str_value(const Value& v) { return v.is_string() ? v : Value(Json(to_str(v))); }

std::string repr(const Json& v) {
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_number_float()) return float_repr(v.get<double>());
  if (v.is_number()) return v.dump();
  if (v.is_string()) return repr_string(v.get_ref<const std::string&>());
  std::string out = v.is_array() ? "[" : "{";
  size_t i = 0;
  for (auto it = v.begin(); it != v.end(); ++it, ++i) {
    if (i) out += ", ";
    if (v.is_object()) out += repr_string(it.key()) + ": ";
    out += repr(*it);
  }
  return out + (v.is_array() ? "]" : "}");
}

std::string type_name(const Value& v) {
  if (v.is_undefined()) return "Undefined";
  if (v.kind() == Value::Kind::kNamespace) return "Namespace";
  if (v.kind() == Value::Kind::kFunction) return "function";
  const Json& d = v.data();
  if (d.is_null()) return "NoneType";
  if (d.is_boolean()) return "bool";
  if (d.is_number_float()) return "float";
  if (d.is_number()) return "int";
  if (d.is_string()) return "str";
  return d.is_array() ? "list" : "dict";
}

std::string dumps(const Json& v, int indent, bool sort_keys) {
  std::string out;
  dumps_to(out, v, indent, sort_keys, 0);
  return out;
}

// Python's repr of a float: the shortest digits that read back, in fixed notation for
// exponents -4..15 and scientific notation otherwise.
std::string float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*e", precision - 1, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string s = buf;  // [-]d.ddde[+-]XX
  const bool negative = s[0] == '-';
  if (negative) s.erase(0, 1);
  const size_t e = s.find('e');
  const int exponent = std::atoi(s.c_str() + e + 1);
  std::string digits = s.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out;
  if (exponent < -4 || exponent >= 16) {
    out = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    std::snprintf(buf, sizeof buf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += buf;
  } else if (exponent < 0) {
    out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  } else {
    const auto point = static_cast<size_t>(exponent + 1);
    if (digits.size() <= point)
      out = digits + std::string(point - digits.size(), '0') + ".0";
    else
      out = digits.substr(0, point) + "." + digits.substr(point);
  }
  return (negative ? "-" : "") + out;
}

void require_defined(const Value& v) {
  if (v.is_undefined()) throw EvalError(v.hint());
}

bool equals(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  if (a.is_undefined()) return true;
  if (a.kind() == Value::Kind::kNamespace) return a.same_namespace(b);
  if (a.kind() == Value::Kind::kFunction) return a.hint() == b.hint();
  const Json& x = a.data();
  const Json& y = b.data();
  if (is_number(x) && is_number(y))
    return is_int(x) && is_int(y) ? as_int(x) == as_int(y) : as_double(x) == as_double(y);
  if (x.is_array() && y.is_array()) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!equals(Value(x[i]), Value(y[i]))) return false;
    return true;
  }
  if (x.is_object() && y.is_object()) {
    if (x.size() != y.size()) return false;
    for (auto it = x.begin(); it != x.end(); ++it)
      if (!y.contains(it.key()) || !equals(Value(*it), Value(y.at(it.key())))) return false;
    return true;
  }
  return x == y;
}

bool less(const Value& a, const Value& b) {
  require_defined(a);
  require_defined(b);
  if (a.is_data() && b.is_data()) {
    const Json& x = a.data();
    const Json& y = b.data();
    if (is_number(x) && is_number(y))
      return is_int(x) && is_int(y) ? as_int(x) < as_int(y) : as_double(x) < as_double(y);
    if (x.is_string() && y.is_string())
      return x.get_ref<const std::string&>() < y.get_ref<const std::string&>();
    if (x.is_array() && y.is_array()) {
      for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
        if (less(Value(x[i]), Value(y[i]))) return true;
        if (less(Value(y[i]), Value(x[i]))) return false;
      }
      return x.size() < y.size();
    }
  }
  throw EvalError("'<' not supported between instances of '" + type_name(a) + "' and '" +
                  type_name(b) + "'");
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  require_defined(a);
  require_defined(b);
  if (!a.is_data() || !b.is_data()) unsupported(op, a, b);
  const Json& x = a.data();
  const Json& y = b.data();
  if (is_number(x) && is_number(y)) {
    if (is_int(x) && is_int(y) && op != "/") return int_arithmetic(op, as_int(x), as_int(y));
    return float_arithmetic(op, as_double(x), as_double(y));
  }
  if (op == "+" && x.is_string() && y.is_string()) return concat(a, b);
  if (op == "+" && x.is_array() && y.is_array()) {
    Json out = x;
    for (const Json& item : y) out.push_back(item);
    return out;
  }
  if (op == "*" && (x.is_string() || x.is_array()) && is_int(y)) return repeat(x, as_int(y));
  if (op == "*" && is_int(x) && (y.is_string() || y.is_array())) return repeat(y, as_int(x));
  unsupported(op, a, b);
}

Value negate(const Value& v) {
  require_defined(v);
  if (!v.is_data() || !is_number(v.data()))
    throw EvalError("bad operand type for unary -: '" + type_name(v) + "'");
  if (is_int(v.data())) return Json(-as_int(v.data()));
  return Json(-v.data().get<double>());
}

Value concat(const Value& a, const Value& b) {
  const Value x = to_str_value(a);
  const Value y = to_str_value(b);
  Taints taints = x.taints();
  for (Taint t : y.taints()) {
    t.begin += x.str().size();
    t.end += x.str().size();
    taints.push_back(t);
  }
  return Value::string(x.str() + y.str(), std::move(taints));
}

std::vector<uint32_t> code_points(const std::string& text) {
  std::vector<uint32_t> points;
  for (size_t i = 0; i < text.size(); i += detail::utf8_char_length(detail::byte_at(text, i)))
    points.push_back(detail::code_point_at(text, i));
  return points;
}

std::string utf8(const std::vector<uint32_t>& points, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) detail::append_utf8(out, points[i]);
  return out;
}

size_t length(const Value& v) {
  if (v.is_undefined()) return 0;
  if (v.is_string()) return code_points(v.str()).size();
  if (v.is_data() && (v.data().is_array() || v.data().is_object())) return v.data().size();
  if (v.kind() == Value::Kind::kNamespace) return v.attrs().size();
  throw EvalError("object of type '" + type_name(v) + "' has no len()");
}

bool is_space(uint32_t c) { return detail::is_white_space(c) || (c >= 0x1C && c <= 0x1F); }

Value strip(const Value& s, const Json& chars, bool left, bool right) {
  const std::string& text = s.str();
  const std::vector<uint32_t> set =
      chars.is_string() ? code_points(chars.get<std::string>()) : std::vector<uint32_t>{};
  auto strippable = [&](size_t pos) {
    const uint32_t c = detail::code_point_at(text, pos);
    return chars.is_string() ? std::find(set.begin(), set.end(), c) != set.end() : is_space(c);
  };
  size_t begin = 0, end = text.size();
  while (left && begin < end && strippable(begin))
    begin += detail::utf8_char_length(detail::byte_at(text, begin));
  while (right && end > begin && strippable(detail::previous_char_start(text, end)))
    end = detail::previous_char_start(text, end);
  Taints taints;
  for (Taint t : s.taints()) {
    t.begin = std::clamp(t.begin, begin, end) - begin;
    t.end = std::clamp(t.end, begin, end) - begin;
    taints.push_back(t);
  }
  return Value::string(text.substr(begin, end - begin), std::move(taints));
}

}  // namespace dst::jinja

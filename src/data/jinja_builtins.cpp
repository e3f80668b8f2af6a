#include "data/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <functional>
#include <map>

namespace dst::jinja {

namespace {

using Filter = std::function<Value(const Value&, const Args&)>;
using Test = std::function<bool(const Value&, const Args&)>;

const Json& data_of(const Value& v) {
  require_defined(v);
  if (!v.is_data()) throw EvalError("unsupported '" + type_name(v) + "' object");
  return v.data();
}

std::string string_of(const Value& v, const char* what) {
  if (!v.is_string())
    throw EvalError(std::string(what) + " must be a string, not '" + type_name(v) + "'");
  return v.str();
}

int64_t int_of(const Value& v, const char* what) {
  if (!v.is_data() || !(v.data().is_number_integer() || v.data().is_boolean()))
    throw EvalError(std::string(what) + " must be an integer, not '" + type_name(v) + "'");
  return v.data().is_boolean() ? v.data().get<bool>() : v.data().get<int64_t>();
}

Json list_of(const std::vector<Value>& items) {
  Json out = Json::array();
  for (const Value& v : items) out.push_back(v.to_json());
  return out;
}

std::string ascii_case(std::string s, bool upper) {
  for (char& c : s)
    c = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(c))
                                : std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string capitalize(const std::string& s) {
  return s.empty() ? s : ascii_case(s.substr(0, 1), true) + ascii_case(s.substr(1), false);
}

std::string title(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    out += static_cast<char>(word_start ? std::toupper(u) : std::tolower(u));
    word_start = std::isspace(u) || c == '-' || c == '(' || c == '[' || c == '{' || c == '<' ||
                 c == '"' || c == '\'';
  }
  return out;
}

// str.replace(old, new, count) by code points (an empty `old` inserts between characters).
std::string replace(const std::string& s, const std::string& from, const std::string& to,
                    int64_t count) {
  if (from.empty()) {
    const std::vector<uint32_t> points = code_points(s);
    std::string out;
    for (size_t i = 0; i <= points.size(); ++i) {
      if (count < 0 || static_cast<int64_t>(i) < count) out += to;
      if (i < points.size()) out += utf8(points, i, i + 1);
    }
    return out;
  }
  std::string out;
  size_t at = 0;
  for (int64_t n = 0; count < 0 || n < count; ++n) {
    const size_t hit = s.find(from, at);
    if (hit == std::string::npos) break;
    out += s.substr(at, hit - at) + to;
    at = hit + from.size();
  }
  return out + s.substr(at);
}

// str.split(sep, maxsplit) / rsplit; a null `sep` splits on whitespace runs.
Json split(const std::string& s, const Json& sep, int64_t max, bool from_right) {
  std::vector<std::string> parts;
  if (sep.is_string()) {
    const std::string& d = sep.get_ref<const std::string&>();
    if (d.empty()) throw EvalError("empty separator");
    std::string rest = s;
    while (max < 0 || static_cast<int64_t>(parts.size()) < max) {
      const size_t hit = from_right ? rest.rfind(d) : rest.find(d);
      if (hit == std::string::npos) break;
      parts.push_back(from_right ? rest.substr(hit + d.size()) : rest.substr(0, hit));
      rest = from_right ? rest.substr(0, hit) : rest.substr(hit + d.size());
    }
    parts.push_back(rest);
  } else {
    std::vector<uint32_t> p = code_points(s);
    if (from_right) std::reverse(p.begin(), p.end());
    size_t i = 0;
    while (true) {
      while (i < p.size() && is_space(p[i])) ++i;
      if (i == p.size()) break;
      size_t end = i;
      if (max >= 0 && static_cast<int64_t>(parts.size()) == max) {
        end = p.size();  // the rest, as it is
      } else {
        while (end < p.size() && !is_space(p[end])) ++end;
      }
      std::vector<uint32_t> word(p.begin() + static_cast<std::ptrdiff_t>(i),
                                 p.begin() + static_cast<std::ptrdiff_t>(end));
      if (from_right) std::reverse(word.begin(), word.end());
      parts.push_back(utf8(word, 0, word.size()));
      i = end;
    }
  }
  if (from_right) std::reverse(parts.begin(), parts.end());
  return parts;
}

Json splitlines(const std::string& s) {
  Json out = Json::array();
  size_t at = 0;
  while (at < s.size()) {
    size_t end = s.find_first_of("\r\n", at);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(at, end - at));
    at = end + (s.compare(end, 2, "\r\n") == 0 ? 2 : 1);
  }
  return out;
}

bool affix(const std::string& s, const Value& arg, bool prefix) {
  std::vector<std::string> options;
  if (arg.is_data() && arg.data().is_array())
    for (const Json& a : arg.data())
      options.push_back(string_of(Value(a), "startswith/endswith argument"));
  else
    options.push_back(string_of(arg, "startswith/endswith argument"));
  for (const std::string& o : options) {
    if (o.size() > s.size()) continue;
    if (s.compare(prefix ? 0 : s.size() - o.size(), o.size(), o) == 0) return true;
  }
  return false;
}

int64_t code_point_index(const std::string& s, size_t byte) {
  return byte == std::string::npos ? -1
                                   : static_cast<int64_t>(code_points(s.substr(0, byte)).size());
}

Value string_method(const Value& object, const std::string& name, const Args& args) {
  const std::string& s = object.str();
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return strip(object, args.get(0, "chars", Json(nullptr)).to_json(), name != "rstrip",
                 name != "lstrip");
  if (name == "startswith" || name == "endswith")
    return Json(affix(s, args.get(0, "prefix"), name == "startswith"));
  if (name == "split" || name == "rsplit")
    return split(s, args.get(0, "sep", Json(nullptr)).to_json(),
                 int_of(args.get(1, "maxsplit", Json(-1)), "maxsplit"), name == "rsplit");
  if (name == "splitlines") return splitlines(s);
  if (name == "upper" || name == "lower") return Json(ascii_case(s, name == "upper"));
  if (name == "title") return Json(title(s));
  if (name == "capitalize") return Json(capitalize(s));
  if (name == "replace")
    return Json(replace(s, string_of(args.get(0, "old"), "old"),
                        string_of(args.get(1, "new"), "new"),
                        int_of(args.get(2, "count", Json(-1)), "count")));
  if (name == "find")
    return Json(code_point_index(s, s.find(string_of(args.get(0, "sub"), "sub"))));
  if (name == "rfind")
    return Json(code_point_index(s, s.rfind(string_of(args.get(0, "sub"), "sub"))));
  if (name == "count")
    return Json(
        static_cast<int64_t>(split(s, string_of(args.get(0, "sub"), "sub"), -1, false).size() - 1));
  if (name == "join") {
    std::string joined;
    bool first = true;
    for (const Value& item : iterate(args.get(0, "iterable"))) {
      joined += (first ? "" : s) + string_of(item, "join item");
      first = false;
    }
    return Json(joined);
  }
  const std::vector<uint32_t> p = code_points(s);
  auto all = [&](const std::function<bool(uint32_t)>& f) {
    return !p.empty() && std::all_of(p.begin(), p.end(), f);
  };
  if (name == "isdigit") return Json(all([](uint32_t c) { return c >= '0' && c <= '9'; }));
  if (name == "isalpha")
    return Json(all([](uint32_t c) { return c >= 0x80 || std::isalpha(static_cast<int>(c)); }));
  if (name == "isspace") return Json(all(is_space));
  throw EvalError("'str object' has no attribute '" + name + "'");
}

Value dict_method(const Value& object, const std::string& name, const Args& args) {
  const Json& d = object.data();
  if (name == "items") return apply_filter("items", object, {});
  if (name == "keys" || name == "values") {
    Json out = Json::array();
    for (auto it = d.begin(); it != d.end(); ++it)
      out.push_back(name == "keys" ? Json(it.key()) : *it);
    return out;
  }
  if (name == "get") {
    const Value found = get_item(object, args.get(0, "key"));
    return found.is_undefined() ? args.get(1, "default", Json(nullptr)) : found;
  }
  if (name == "cycle" && d.contains("index0") && d.contains("length")) {  // loop.cycle
    if (args.positional.empty()) throw EvalError("no items for cycling given");
    return args
        .positional[static_cast<size_t>(d["index0"].get<int64_t>()) % args.positional.size()];
  }
  throw EvalError("'dict object' has no attribute '" + name + "'");
}

// ----- filters -----

Value filter_default(const Value& v, const Args& a) {
  const bool boolean = truthy(a.get(1, "boolean", Json(false)));
  return v.is_undefined() || (boolean && !truthy(v)) ? a.get(0, "default_value", Json("")) : v;
}

Value filter_first_last(const Value& v, bool last) {
  const std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("no first item, sequence was empty");
  return last ? items.back() : items.front();
}

Value filter_join(const Value& v, const Args& a) {
  const std::string separator = to_str(a.get(0, "d", Json("")));
  const Value attribute = a.get(1, "attribute");
  std::string out;
  bool first = true;
  for (const Value& item : iterate(v)) {
    out += (first ? "" : separator) +
           to_str(attribute.is_undefined() ? item : get_item(item, attribute));
    first = false;
  }
  return Json(out);
}

Value filter_number(const Value& v, const Args& a, bool integer) {
  const Value fallback = a.get(0, "default", integer ? Json(0) : Json(0.0));
  if (!v.is_data()) return fallback;
  const Json& d = v.data();
  double x = 0;
  if (d.is_number() || d.is_boolean()) {
    x = d.is_boolean() ? d.get<bool>() : d.get<double>();
    if (integer && !d.is_number_float())
      return Json(d.is_boolean() ? int64_t{d.get<bool>()} : d.get<int64_t>());
  } else if (d.is_string()) {
    const std::string s = d.get<std::string>();
    char* end = nullptr;
    x = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0') return fallback;
  } else {
    return fallback;
  }
  return integer ? Json(static_cast<int64_t>(std::trunc(x))) : Json(x);
}

Value filter_items(const Value& v) {
  Json out = Json::array();
  if (v.is_undefined()) return out;
  const Json& d = data_of(v);
  if (!d.is_object()) throw EvalError("can only get item pairs from a mapping");
  for (auto it = d.begin(); it != d.end(); ++it) out.push_back(Json::array({it.key(), *it}));
  return out;
}

Value filter_map(const Value& v, const Args& a) {
  Json out = Json::array();
  const Value attribute = a.get(99, "attribute");
  Args rest;
  if (attribute.is_undefined())
    rest.positional.assign(a.positional.begin() + (a.positional.empty() ? 0 : 1),
                           a.positional.end());
  for (const Value& item : iterate(v)) {
    if (!attribute.is_undefined()) {
      const Value got = get_item(item, attribute);
      out.push_back((got.is_undefined() ? a.get(99, "default") : got).to_json());
    } else {
      out.push_back(apply_filter(to_str(a.get(0, "filter")), item, rest).to_json());
    }
  }
  return out;
}

// select / reject (attribute: selectattr / rejectattr).
Value filter_select(const Value& v, const Args& a, bool keep, bool by_attribute) {
  const size_t test_at = by_attribute ? 1 : 0;
  Args rest;
  if (a.positional.size() > test_at + 1)
    rest.positional.assign(a.positional.begin() + static_cast<std::ptrdiff_t>(test_at + 1),
                           a.positional.end());
  Json out = Json::array();
  for (const Value& item : iterate(v)) {
    const Value subject = by_attribute ? get_item(item, a.get(0, "attribute")) : item;
    const bool passes = a.positional.size() > test_at
                            ? apply_test(to_str(a.positional[test_at]), subject, rest)
                            : truthy(subject);
    if (passes == keep) out.push_back(item.to_json());
  }
  return out;
}

Value filter_reverse(const Value& v) {
  if (v.is_string()) {
    std::vector<uint32_t> p = code_points(v.str());
    std::reverse(p.begin(), p.end());
    return Json(utf8(p, 0, p.size()));
  }
  std::vector<Value> items = iterate(v);
  std::reverse(items.begin(), items.end());
  return list_of(items);
}

Value filter_sort(const Value& v, const Args& a) {
  const bool reverse = truthy(a.get(0, "reverse", Json(false)));
  const bool case_sensitive = truthy(a.get(1, "case_sensitive", Json(false)));
  const Value attribute = a.get(2, "attribute");
  auto key = [&](const Value& item) {
    Value k = attribute.is_undefined() ? item : get_item(item, attribute);
    return k.is_string() && !case_sensitive ? Value(Json(ascii_case(k.str(), false))) : k;
  };
  std::vector<Value> items = iterate(v);
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    return reverse ? less(key(y), key(x)) : less(key(x), key(y));
  });
  return list_of(items);
}

Value filter_unique(const Value& v) {
  std::vector<Value> out;
  for (const Value& item : iterate(v))
    if (std::none_of(out.begin(), out.end(), [&](const Value& seen) { return equals(seen, item); }))
      out.push_back(item);
  return list_of(out);
}

Value filter_indent(const Value& v, const Args& a) {
  const Value width = a.get(0, "width", Json(4));
  const std::string pad = width.is_string()
                              ? width.str()
                              : std::string(static_cast<size_t>(int_of(width, "width")), ' ');
  const bool first = truthy(a.get(1, "first", Json(false)));
  const bool blank = truthy(a.get(2, "blank", Json(false)));
  const Json lines = splitlines(to_str(v) + "\n");
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string line = lines[i].get<std::string>();
    if (i > 0) out += "\n";
    out += (i > 0 || first) && (blank || !line.empty()) ? pad + line : line;
  }
  return Json(out);
}

Value filter_tojson(const Value& v, const Args& a) {
  const Value indent = a.get(0, "indent", Json(nullptr));
  const bool sort_keys = truthy(a.get(99, "sort_keys", Json(false)));
  return Json(dumps(v.to_json(),
                    indent.is_data() && !indent.data().is_null()
                        ? static_cast<int>(int_of(indent, "indent"))
                        : -1,
                    sort_keys));
}

const std::map<std::string, Filter>& filters() {
  static const std::map<std::string, Filter> table = {
      {"abs", [](const Value& v, const Args&) { return less(v, Json(0)) ? negate(v) : v; }},
      {"capitalize",
       [](const Value& v, const Args&) { return Value(Json(capitalize(to_str(v)))); }},
      {"count", [](const Value& v, const Args&) { return Value(Json(length(v))); }},
      {"d", filter_default},
      {"default", filter_default},
      {"first", [](const Value& v, const Args&) { return filter_first_last(v, false); }},
      {"float", [](const Value& v, const Args& a) { return filter_number(v, a, false); }},
      {"indent", filter_indent},
      {"int", [](const Value& v, const Args& a) { return filter_number(v, a, true); }},
      {"items", [](const Value& v, const Args&) { return filter_items(v); }},
      {"join", filter_join},
      {"last", [](const Value& v, const Args&) { return filter_first_last(v, true); }},
      {"length", [](const Value& v, const Args&) { return Value(Json(length(v))); }},
      {"list", [](const Value& v, const Args&) { return Value(list_of(iterate(v))); }},
      {"lower",
       [](const Value& v, const Args&) { return Value(Json(ascii_case(to_str(v), false))); }},
      {"map", filter_map},
      {"reject", [](const Value& v, const Args& a) { return filter_select(v, a, false, false); }},
      {"rejectattr",
       [](const Value& v, const Args& a) { return filter_select(v, a, false, true); }},
      {"replace",
       [](const Value& v, const Args& a) {
         return Value(Json(replace(to_str(v), to_str(a.get(0, "old")), to_str(a.get(1, "new")),
                                   a.has(2, "count") ? int_of(a.get(2, "count"), "count") : -1)));
       }},
      {"reverse", [](const Value& v, const Args&) { return filter_reverse(v); }},
      {"safe", [](const Value& v, const Args&) { return v; }},
      {"select", [](const Value& v, const Args& a) { return filter_select(v, a, true, false); }},
      {"selectattr", [](const Value& v, const Args& a) { return filter_select(v, a, true, true); }},
      {"sort", filter_sort},
      {"string", [](const Value& v, const Args&) { return to_str_value(v); }},
      {"title", [](const Value& v, const Args&) { return Value(Json(title(to_str(v)))); }},
      {"tojson", filter_tojson},
      {"trim",
       [](const Value& v, const Args& a) {
         return strip(to_str_value(v), a.get(0, "chars", Json(nullptr)).to_json(), true, true);
       }},
      {"unique", [](const Value& v, const Args&) { return filter_unique(v); }},
      {"upper",
       [](const Value& v, const Args&) { return Value(Json(ascii_case(to_str(v), true))); }},
  };
  return table;
}

// ----- tests -----

// A test of a value's JSON type.
Test on_data(bool (*predicate)(const Json&)) {
  return [predicate](const Value& v, const Args&) { return v.is_data() && predicate(v.data()); };
}

bool is_container(const Json& d) { return d.is_string() || d.is_array() || d.is_object(); }

// Tests of what a value is.
std::map<std::string, Test> kind_tests() {
  return {
      {"defined", [](const Value& v, const Args&) { return !v.is_undefined(); }},
      {"undefined", [](const Value& v, const Args&) { return v.is_undefined(); }},
      {"string", [](const Value& v, const Args&) { return v.is_string(); }},
      {"none", on_data([](const Json& d) { return d.is_null(); })},
      {"number", on_data([](const Json& d) { return d.is_number() || d.is_boolean(); })},
      {"integer", on_data([](const Json& d) { return d.is_number_integer(); })},
      {"float", on_data([](const Json& d) { return d.is_number_float(); })},
      {"boolean", on_data([](const Json& d) { return d.is_boolean(); })},
      {"true", on_data([](const Json& d) { return d.is_boolean() && d.get<bool>(); })},
      {"false", on_data([](const Json& d) { return d.is_boolean() && !d.get<bool>(); })},
      {"mapping", on_data([](const Json& d) { return d.is_object(); })},
      {"sequence", on_data(is_container)},
      {"iterable", [](const Value& v,
                      const Args& a) { return v.is_undefined() || on_data(is_container)(v, a); }},
      {"callable", [](const Value& v, const Args&) { return v.kind() == Value::Kind::kFunction; }},
      {"lower", [](const Value& v,
                   const Args&) { return v.is_string() && ascii_case(v.str(), false) == v.str(); }},
      {"upper", [](const Value& v,
                   const Args&) { return v.is_string() && ascii_case(v.str(), true) == v.str(); }},
  };
}

// Tests of a number, and comparisons with an argument.
std::map<std::string, Test> comparison_tests() {
  return {
      {"odd", [](const Value& v, const Args&) { return int_of(v, "odd") % 2 != 0; }},
      {"even", [](const Value& v, const Args&) { return int_of(v, "even") % 2 == 0; }},
      {"divisibleby",
       [](const Value& v, const Args& a) {
         return int_of(v, "divisibleby") % int_of(a.get(0, "num"), "num") == 0;
       }},
      {"eq", [](const Value& v, const Args& a) { return equals(v, a.get(0, "other")); }},
      {"ne", [](const Value& v, const Args& a) { return !equals(v, a.get(0, "other")); }},
      {"lt", [](const Value& v, const Args& a) { return less(v, a.get(0, "other")); }},
      {"le", [](const Value& v, const Args& a) { return !less(a.get(0, "other"), v); }},
      {"gt", [](const Value& v, const Args& a) { return less(a.get(0, "other"), v); }},
      {"ge", [](const Value& v, const Args& a) { return !less(v, a.get(0, "other")); }},
      {"in", [](const Value& v, const Args& a) { return contains(a.get(0, "seq"), v); }},
      {"sameas",
       [](const Value& v, const Args& a) {  // identity: only None, True, False
         const Value o = a.get(0, "other");
         return v.is_data() && (v.data().is_null() || v.data().is_boolean()) && equals(v, o);
       }},
  };
}

const std::map<std::string, Test>& tests() {
  static const std::map<std::string, Test> table = [] {
    std::map<std::string, Test> t = kind_tests();
    t.merge(comparison_tests());
    const char* const aliases[][2] = {{"equalto", "eq"},     {"==", "eq"}, {"!=", "ne"},
                                      {"lessthan", "lt"},    {"<", "lt"},  {"<=", "le"},
                                      {"greaterthan", "gt"}, {">", "gt"},  {">=", "ge"}};
    for (const auto& alias : aliases) t[alias[0]] = t[alias[1]];
    return t;
  }();
  return table;
}

}  // namespace

Value Args::get(size_t index, const std::string& name, Value fallback) const {
  if (index < positional.size()) return positional[index];
  for (const auto& [key, value] : keywords)
    if (key == name) return value;
  return fallback;
}

bool Args::has(size_t index, const std::string& name) const {
  if (index < positional.size()) return true;
  return std::any_of(keywords.begin(), keywords.end(),
                     [&](const auto& kw) { return kw.first == name; });
}

bool has_filter(const std::string& name) { return filters().count(name) > 0; }
bool has_test(const std::string& name) { return tests().count(name) > 0; }
bool is_global(const std::string& name) {
  return name == "namespace" || name == "range" || name == "dict" || name == "raise_exception" ||
         name == "strftime_now";
}

Value apply_filter(const std::string& name, const Value& value, const Args& args) {
  const auto it = filters().find(name);
  if (it == filters().end()) throw EvalError("no filter named '" + name + "'");
  return it->second(value, args);
}

bool apply_test(const std::string& name, const Value& value, const Args& args) {
  const auto it = tests().find(name);
  if (it == tests().end()) throw EvalError("no test named '" + name + "'");
  return it->second(value, args);
}

Value call_method(const Value& object, const std::string& name, const Args& args) {
  require_defined(object);
  if (object.is_string()) return string_method(object, name, args);
  if (object.is_data() && object.data().is_object()) return dict_method(object, name, args);
  throw EvalError("'" + type_name(object) + " object' has no attribute '" + name + "'");
}

Value call_global(const std::string& name, const Args& args) {
  if (name == "raise_exception") throw EvalError(to_str(args.get(0, "message")), true);
  if (name == "namespace" || name == "dict") {
    Namespace attrs;
    if (!args.positional.empty())
      for (const Value& key : iterate(args.positional[0]))
        attrs.emplace_back(to_str(key), get_item(args.positional[0], key));
    for (const auto& kw : args.keywords) attrs.push_back(kw);
    if (name == "namespace") return Value::make_namespace(std::move(attrs));
    Json dict = Json::object();
    for (const auto& [key, value] : attrs) dict[key] = value.to_json();
    return dict;
  }
  if (name == "range") {
    const bool one = args.positional.size() == 1;
    const int64_t start = one ? 0 : int_of(args.get(0, "start"), "start");
    const int64_t stop = int_of(args.get(one ? 0 : 1, "stop"), "stop");
    const int64_t step = int_of(args.get(2, "step", Json(1)), "step");
    if (step == 0) throw EvalError("range() arg 3 must not be zero");
    Json out = Json::array();
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() >= 1000000) throw EvalError("range() of more than 1,000,000 items");
      out.push_back(i);
    }
    return out;
  }
  // strftime_now(format): the local time, as transformers gives it.
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[256];
  const size_t n =
      std::strftime(buf, sizeof buf, string_of(args.get(0, "format"), "format").c_str(), &local);
  return Json(std::string(buf, n));
}

std::vector<Value> iterate(const Value& v) {
  if (v.is_undefined()) return {};
  std::vector<Value> items;
  if (v.is_string()) {
    const std::vector<uint32_t> p = code_points(v.str());
    for (size_t i = 0; i < p.size(); ++i) items.emplace_back(Json(utf8(p, i, i + 1)));
    return items;
  }
  if (v.is_data() && v.data().is_array()) {
    for (const Json& item : v.data()) items.emplace_back(item);
    return items;
  }
  if (v.is_data() && v.data().is_object()) {
    for (auto it = v.data().begin(); it != v.data().end(); ++it) items.emplace_back(Json(it.key()));
    return items;
  }
  throw EvalError("'" + type_name(v) + "' object is not iterable");
}

bool contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string())
      throw EvalError("'in <string>' requires string as left operand, not " + type_name(item));
    return container.str().find(item.str()) != std::string::npos;
  }
  if (container.is_data() && container.data().is_object())
    return item.is_string() && container.data().contains(item.str());
  const std::vector<Value> items = iterate(container);
  return std::any_of(items.begin(), items.end(), [&](const Value& x) { return equals(x, item); });
}

Value get_attribute(const Value& object, const std::string& name) {
  require_defined(object);
  if (object.kind() == Value::Kind::kNamespace) {
    for (const auto& [key, value] : object.attrs())
      if (key == name) return value;
  } else if (object.is_data() && object.data().is_object() && object.data().contains(name)) {
    return object.data()[name];
  }
  return Value::undefined("'" + type_name(object) + " object' has no attribute '" + name + "'");
}

Value get_item(const Value& object, const Value& key) {
  require_defined(object);
  if (key.is_string()) return get_attribute(object, key.str());
  const bool sequence = object.is_string() || (object.is_data() && object.data().is_array());
  if (!sequence || !key.is_data() || !key.data().is_number_integer())
    return Value::undefined("'" + type_name(object) + " object' has no attribute " + to_str(key));
  const int64_t n = static_cast<int64_t>(length(object));
  int64_t i = key.data().get<int64_t>();
  if (i < 0) i += n;
  if (i < 0 || i >= n)
    return Value::undefined("'" + type_name(object) + " object' has no element " + to_str(key));
  if (object.is_string())
    return Json(
        utf8(code_points(object.str()), static_cast<size_t>(i), static_cast<size_t>(i) + 1));
  return object.data()[static_cast<size_t>(i)];
}

}  // namespace dst::jinja

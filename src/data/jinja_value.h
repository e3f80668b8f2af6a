// Values of the Jinja interpreter (data/jinja_template.h) and the Python semantics jinja2 gives
// them: truthiness, str(), repr(), json.dumps, equality, ordering, arithmetic, and strings by code
// point. Plain data is an ordered JSON value (Python dicts keep insertion order); besides it a
// value can be undefined (jinja2's default Undefined), a namespace (shared, mutable) or a global
// function. A string remembers which of its bytes came from an assistant message's content
// ("taint"), so the chat renderer can find them in the output. Private to src/data.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dst::jinja {

using Json = nlohmann::ordered_json;

// An evaluation error (jinja2's UndefinedError, TypeError, ...); the evaluator adds the line.
// `raised`: the template's own raise_exception(message).
struct EvalError : std::runtime_error {
  explicit EvalError(const std::string& what, bool raised = false)
      : std::runtime_error(what), raised(raised) {}
  bool raised;
  int line = 0;  // of the innermost node being evaluated (0: not yet known)
};

// Bytes [begin, end) of a string that are the content of assistant message `message`.
struct Taint {
  size_t begin = 0;
  size_t end = 0;
  int message = 0;
};
using Taints = std::vector<Taint>;

class Value;
using Namespace = std::vector<std::pair<std::string, Value>>;

class Value {
 public:
  enum class Kind { kUndefined, kData, kNamespace, kFunction };

  Value() = default;                                                // undefined
  Value(Json data) : kind_(Kind::kData), data_(std::move(data)) {}  // NOLINT: implicit
  static Value undefined(std::string hint);
  static Value string(std::string text, Taints taints = {});
  static Value function(std::string name);
  static Value make_namespace(Namespace attrs);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_data() const { return kind_ == Kind::kData; }
  bool is_string() const { return is_data() && data_.is_string(); }
  const Json& data() const { return data_; }
  const std::string& str() const { return data_.get_ref<const std::string&>(); }
  const Taints& taints() const { return taints_; }
  // The undefined value's jinja2 message ("'x' is undefined"), or a function's name.
  const std::string& hint() const { return hint_; }
  Namespace& attrs() const { return *namespace_; }
  bool same_namespace(const Value& other) const { return namespace_ == other.namespace_; }
  // The JSON of this value for a container or json.dumps (undefined: null; EvalError for a
  // namespace or function).
  Json to_json() const;

 private:
  Kind kind_ = Kind::kUndefined;
  Json data_;
  Taints taints_;
  std::string hint_;
  std::shared_ptr<Namespace> namespace_;
};

// Python: bool(v), str(v), repr(v), type(v).__name__.
bool truthy(const Value& v);
std::string to_str(const Value& v);
Value to_str_value(const Value& v);  // str(v), keeping a string's taints
std::string repr(const Json& v);
std::string type_name(const Value& v);
// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort_keys); indent < 0: none.
std::string dumps(const Json& v, int indent = -1, bool sort_keys = false);
std::string float_repr(double x);

// Throws jinja2's UndefinedError for an undefined operand of an operation.
void require_defined(const Value& v);

// Python ==, <, + - * / // % ** and unary minus. EvalError where Python raises TypeError.
bool equals(const Value& a, const Value& b);
bool less(const Value& a, const Value& b);
Value arithmetic(const std::string& op, const Value& a, const Value& b);
Value negate(const Value& v);
Value concat(const Value& a, const Value& b);  // str(a) + str(b), taints kept

// Strings as Python sees them: code points of UTF-8 text.
std::vector<uint32_t> code_points(const std::string& text);
std::string utf8(const std::vector<uint32_t>& points, size_t begin, size_t end);
size_t length(const Value& v);  // len(): code points, items or keys
bool is_space(uint32_t c);      // str.isspace()
// str.strip / lstrip / rstrip with `chars` (null: whitespace), taints clipped.
Value strip(const Value& s, const Json& chars, bool left, bool right);

}  // namespace dst::jinja

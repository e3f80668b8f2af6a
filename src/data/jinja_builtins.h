// The filters, tests, methods and global functions of the Jinja interpreter
// (data/jinja_template.h), with jinja2's and Python's behaviour:
//   filters: abs capitalize count d default first float indent int items join last length list
//            lower map reject rejectattr replace reverse safe select selectattr sort string title
//            tojson trim unique upper
//   tests:   defined undefined none string number integer float boolean true false mapping
//            iterable sequence callable odd even divisibleby eq equalto ne lt lessthan le gt
//            greaterthan ge in lower upper sameas (and ==, !=, <, <=, >, >=)
//   methods: str strip lstrip rstrip startswith endswith split rsplit splitlines upper lower
//            title capitalize replace find rfind count join isdigit isalpha isspace; dict items
//            keys values get; loop.cycle
//   globals: namespace range dict raise_exception strftime_now
// Case mapping (upper, lower, title, capitalize) is ASCII only. Private.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "data/jinja_value.h"

namespace dst::jinja {

struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
  // The argument at position `index` or named `name`, else `fallback`.
  Value get(size_t index, const std::string& name, Value fallback = Value()) const;
  bool has(size_t index, const std::string& name) const;
};

bool has_filter(const std::string& name);
bool has_test(const std::string& name);
bool is_global(const std::string& name);

Value apply_filter(const std::string& name, const Value& value, const Args& args);
bool apply_test(const std::string& name, const Value& value, const Args& args);
Value call_method(const Value& object, const std::string& name, const Args& args);
Value call_global(const std::string& name, const Args& args);

// Python's iteration: list items, dict keys, string characters; nothing for undefined.
std::vector<Value> iterate(const Value& v);
// `item in container`.
bool contains(const Value& container, const Value& item);
// obj.name / obj[key] as jinja2's getattr/getitem (undefined for a missing key; EvalError on an
// undefined object).
Value get_attribute(const Value& object, const std::string& name);
Value get_item(const Value& object, const Value& key);

}  // namespace dst::jinja

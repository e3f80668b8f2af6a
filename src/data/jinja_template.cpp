#include "deepseek_train/data/jinja_template.h"

#include <algorithm>

#include "data/jinja_ast.h"
#include "data/jinja_builtins.h"
#include "data/jinja_lexer.h"
#include "data/jinja_value.h"
#include "deepseek_train/core/error.h"

namespace dst {

namespace jinja {

namespace {

using Output = JinjaTemplate::Output;

// Runs statements against a context, writing into an Output. Names set at the top level live in
// the outermost scope; each for-loop iteration has a scope of its own (as in jinja2, a `set`
// inside a loop is not seen after it: namespaces carry state out).
class Evaluator {
 public:
  Evaluator(const Json& context, Output& out) : context_(context), out_(out) {
    scopes_.emplace_back();
    buffers_.emplace_back();
  }

  void run(const Body& body) {
    exec(body);
    out_.text = std::move(buffers_.front());
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  using Scope = std::vector<std::pair<std::string, Value>>;

  Flow exec(const Body& body) {
    for (const auto& s : body) {
      const Flow flow = exec_located(*s);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  Flow exec_located(const Stmt& s) {
    try {
      return exec(s);
    } catch (EvalError& e) {
      if (e.line == 0) e.line = s.line;
      throw;
    }
  }

  Flow exec(const Stmt& s) {
    switch (s.kind) {
      case Stmt::Kind::kText:
        buffers_.back() += s.text;
        return Flow::kNormal;
      case Stmt::Kind::kOutput:
        write(eval(*s.expr));
        return Flow::kNormal;
      case Stmt::Kind::kIf:
        return exec_if(s);
      case Stmt::Kind::kFor:
        return exec_for(s);
      case Stmt::Kind::kSet:
        assign(s, eval(*s.expr));
        return Flow::kNormal;
      case Stmt::Kind::kSetBlock:
        exec_set_block(s);
        return Flow::kNormal;
      case Stmt::Kind::kGeneration:
        return exec_generation(s);
      case Stmt::Kind::kBreak:
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  // Appends str(v); at the top level, records where traced assistant content lands.
  void write(const Value& v) {
    const Value s = to_str_value(v);
    std::string& buffer = buffers_.back();
    if (buffers_.size() == 1)
      for (const Taint& t : s.taints())
        out_.assistant_content.push_back(
            {buffer.size() + t.begin, buffer.size() + t.end, t.message});
    buffer += s.str();
  }

  Flow exec_if(const Stmt& s) {
    for (const auto& [condition, body] : s.branches)
      if (!condition || truthy(eval(*condition))) return exec(body);
    return Flow::kNormal;
  }

  Flow exec_for(const Stmt& s) {
    std::vector<Value> items = iterate(eval(*s.expr));
    if (s.filter) {
      std::vector<Value> kept;
      for (Value& item : items) {
        scopes_.emplace_back();
        unpack(s.targets, item);
        if (truthy(eval(*s.filter))) kept.push_back(std::move(item));
        scopes_.pop_back();
      }
      items = std::move(kept);
    }
    if (items.empty()) return in_scope([&] { return exec(s.else_body); });
    for (size_t i = 0; i < items.size(); ++i) {
      const Flow flow = in_scope([&] {
        unpack(s.targets, items[i]);
        set("loop", loop_object(items, i));
        return exec(s.body);
      });
      if (flow == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  template <typename F>
  Flow in_scope(F&& body) {
    scopes_.emplace_back();
    try {
      const Flow flow = body();
      scopes_.pop_back();
      return flow;
    } catch (...) {
      scopes_.pop_back();
      throw;
    }
  }

  static Json loop_object(const std::vector<Value>& items, size_t i) {
    const auto n = static_cast<int64_t>(items.size());
    const auto k = static_cast<int64_t>(i);
    Json loop = {
        {"index", k + 1},  {"index0", k},        {"revindex", n - k}, {"revindex0", n - k - 1},
        {"first", k == 0}, {"last", k == n - 1}, {"length", n},       {"depth", 1},
        {"depth0", 0}};
    if (i > 0) loop["previtem"] = items[i - 1].to_json();
    if (i + 1 < items.size()) loop["nextitem"] = items[i + 1].to_json();
    return loop;
  }

  void exec_set_block(const Stmt& s) {
    buffers_.emplace_back();
    exec(s.body);
    Value value = Json(std::move(buffers_.back()));
    buffers_.pop_back();
    if (s.filter) value = apply_filters(*s.filter, value);
    set(s.targets[0], value);
  }

  Value apply_filters(const Expr& filter, const Value& base) {
    const Value input = filter.args[0] ? apply_filters(*filter.args[0], base) : base;
    return apply_filter(filter.name, input, arguments(filter, 1));
  }

  Flow exec_generation(const Stmt& s) {
    const size_t begin = buffers_.back().size();
    const Flow flow = exec(s.body);
    if (buffers_.size() == 1) out_.generation.emplace_back(begin, buffers_.back().size());
    return flow;
  }

  // ----- variables -----
  void set(const std::string& name, Value value) {
    Scope& scope = scopes_.back();
    for (auto& [key, v] : scope)
      if (key == name) {
        v = std::move(value);
        return;
      }
    scope.emplace_back(name, std::move(value));
  }

  void unpack(const std::vector<std::string>& targets, const Value& value) {
    if (targets.size() == 1) return set(targets[0], value);
    const std::vector<Value> items = iterate(value);
    if (items.size() != targets.size())
      throw EvalError(items.size() < targets.size() ? "not enough values to unpack"
                                                    : "too many values to unpack");
    for (size_t i = 0; i < items.size(); ++i) set(targets[i], items[i]);
  }

  void assign(const Stmt& s, const Value& value) {
    if (s.attribute.empty()) return unpack(s.targets, value);
    const Value ns = lookup(s.targets[0]);
    if (ns.kind() != Value::Kind::kNamespace)
      throw EvalError("cannot assign attribute on non-namespace object");
    for (auto& [key, v] : ns.attrs())
      if (key == s.attribute) {
        v = value;
        return;
      }
    ns.attrs().emplace_back(s.attribute, value);
  }

  Value lookup(const std::string& name) const {
    for (auto scope = scopes_.rbegin(); scope != scopes_.rend(); ++scope)
      for (const auto& [key, value] : *scope)
        if (key == name) return value;
    if (context_.contains(name)) return context_[name];
    if (is_global(name)) return Value::function(name);
    return Value::undefined("'" + name + "' is undefined");
  }

  // ----- expressions -----
  Value eval(const Expr& e) {
    try {
      return eval_node(e);
    } catch (EvalError& err) {
      if (err.line == 0) err.line = e.line;
      throw;
    }
  }

  Value eval_node(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.literal;
      case Expr::Kind::kName:
        return lookup(e.name);
      case Expr::Kind::kList:
        return list(e);
      case Expr::Kind::kDict:
        return dict(e);
      case Expr::Kind::kGetAttr: {
        const Value object = eval(*e.args[0]);
        return traced(object, e.name, get_attribute(object, e.name));
      }
      case Expr::Kind::kGetItem:
        return item(e);
      case Expr::Kind::kSlice:
        throw EvalError("a slice outside a subscript");
      case Expr::Kind::kCall:
        return call(e);
      case Expr::Kind::kFilter:
        return apply_filter(e.name, eval(*e.args[0]), arguments(e, 1));
      case Expr::Kind::kTest:
        return Json(apply_test(e.name, eval(*e.args[0]), arguments(e, 1)));
      case Expr::Kind::kNegate:
        return negate(eval(*e.args[0]));
      case Expr::Kind::kNot:
        return Json(!truthy(eval(*e.args[0])));
      case Expr::Kind::kBinary:
        return arithmetic(e.name, eval(*e.args[0]), eval(*e.args[1]));
      case Expr::Kind::kAnd:
      case Expr::Kind::kOr:
        return logical(e);
      case Expr::Kind::kCompare:
        return Json(compare(e));
      case Expr::Kind::kConcat:
        return concatenate(e);
      case Expr::Kind::kCondition:
        return condition(e);
    }
    throw EvalError("unknown expression");
  }

  Value list(const Expr& e) {
    Json out = Json::array();
    for (const auto& item : e.args) out.push_back(eval(*item).to_json());
    return out;
  }

  Value dict(const Expr& e) {
    Json out = Json::object();
    for (size_t i = 0; i + 1 < e.args.size(); i += 2)
      out[to_str(eval(*e.args[i]))] = eval(*e.args[i + 1]).to_json();
    return out;
  }

  // A message's content read from a message whose role is assistant: traced to the output.
  Value traced(const Value& object, const std::string& key, Value value) const {
    if (key != "content" || !value.is_string() || !object.is_data()) return value;
    const Json& message = object.data();
    if (!message.is_object() || message.value("role", Json()) != "assistant") return value;
    const Json& messages = context_.contains("messages") ? context_["messages"] : Json();
    for (size_t i = 0; messages.is_array() && i < messages.size(); ++i)
      if (messages[i] == message)
        return Value::string(value.str(), {{0, value.str().size(), static_cast<int>(i)}});
    return value;
  }

  Value item(const Expr& e) {
    const Value object = eval(*e.args[0]);
    if (e.args[1]->kind == Expr::Kind::kSlice) return slice(object, *e.args[1]);
    const Value key = eval(*e.args[1]);
    const Value value = get_item(object, key);
    return key.is_string() ? traced(object, key.str(), value) : value;
  }

  int64_t slice_bound(const ExprPtr& bound, int64_t fallback) {
    if (!bound) return fallback;
    const Value v = eval(*bound);
    if (v.is_data() && v.data().is_null()) return fallback;
    if (!v.is_data() || !v.data().is_number_integer())
      throw EvalError("slice indices must be integers or None");
    return v.data().get<int64_t>();
  }

  // Python's seq[start:stop:step] of a list or a string (by code point).
  Value slice(const Value& object, const Expr& e) {
    require_defined(object);
    const int64_t step = slice_bound(e.args[2], 1);
    if (step == 0) throw EvalError("slice step cannot be zero");
    const auto n = static_cast<int64_t>(length(object));
    auto clamp = [&](int64_t i, int64_t absent) {
      if (i == absent) return i;
      if (i < 0) i += n;
      return step > 0 ? std::clamp<int64_t>(i, 0, n) : std::clamp<int64_t>(i, -1, n - 1);
    };
    const int64_t start = clamp(slice_bound(e.args[0], step > 0 ? 0 : n - 1), INT64_MIN);
    const int64_t stop = clamp(slice_bound(e.args[1], step > 0 ? n : INT64_MIN), INT64_MIN);
    const int64_t end = stop == INT64_MIN ? -1 : stop;
    std::vector<size_t> picked;
    for (int64_t i = start; step > 0 ? i < end : i > end; i += step)
      picked.push_back(static_cast<size_t>(i));
    if (object.is_string()) {
      const std::vector<uint32_t> points = code_points(object.str());
      std::string out;
      for (size_t i : picked) out += utf8(points, i, i + 1);
      return Json(out);
    }
    if (!object.is_data() || !object.data().is_array())
      throw EvalError("'" + type_name(object) + "' object is not subscriptable");
    Json out = Json::array();
    for (size_t i : picked) out.push_back(object.data()[i]);
    return out;
  }

  Args arguments(const Expr& e, size_t first) {
    Args args;
    for (size_t i = first; i < e.args.size(); ++i) args.positional.push_back(eval(*e.args[i]));
    for (const auto& [key, value] : e.kwargs) args.keywords.emplace_back(key, eval(*value));
    return args;
  }

  Value call(const Expr& e) {
    const Expr& callee = *e.args[0];
    const Args args = arguments(e, 1);
    if (callee.kind == Expr::Kind::kGetAttr) {
      const Value object = eval(*callee.args[0]);
      if (object.kind() == Value::Kind::kNamespace ||
          (object.is_data() && object.data().is_object() && object.data().contains(callee.name)))
        return call_value(get_attribute(object, callee.name), args);
      const Value result = call_method(object, callee.name, args);
      const bool get =
          callee.name == "get" && !args.positional.empty() && args.positional[0].is_string();
      return get ? traced(object, args.positional[0].str(), result) : result;
    }
    return call_value(eval(callee), args);
  }

  static Value call_value(const Value& f, const Args& args) {
    if (f.kind() == Value::Kind::kFunction) return call_global(f.hint(), args);
    require_defined(f);
    throw EvalError("'" + type_name(f) + "' object is not callable");
  }

  Value logical(const Expr& e) {
    Value left = eval(*e.args[0]);
    const bool decided = e.kind == Expr::Kind::kAnd ? !truthy(left) : truthy(left);
    return decided ? left : eval(*e.args[1]);
  }

  // Python's chained comparison: a < b < c is a < b and b < c.
  bool compare(const Expr& e) {
    Value left = eval(*e.args[0]);
    for (size_t i = 0; i < e.ops.size(); ++i) {
      Value right = eval(*e.args[i + 1]);
      const std::string& op = e.ops[i];
      bool ok = false;
      if (op == "==")
        ok = equals(left, right);
      else if (op == "!=")
        ok = !equals(left, right);
      else if (op == "<")
        ok = less(left, right);
      else if (op == ">")
        ok = less(right, left);
      else if (op == "<=")
        ok = !less(right, left);
      else if (op == ">=")
        ok = !less(left, right);
      else if (op == "in")
        ok = contains(right, left);
      else
        ok = !contains(right, left);
      if (!ok) return false;
      left = std::move(right);
    }
    return true;
  }

  Value concatenate(const Expr& e) {
    Value out = Json("");
    for (const auto& part : e.args) out = concat(out, eval(*part));
    return out;
  }

  Value condition(const Expr& e) {
    if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
    if (e.args[2]) return eval(*e.args[2]);
    return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                            " evaluated to false and no else section was defined");
  }

  const Json& context_;
  Output& out_;
  std::vector<Scope> scopes_;
  std::vector<std::string> buffers_;  // output, then one per {% set %} block being captured
};

// Every filter and test name known; whether a generation block exists.
struct Checker {
  bool generation = false;

  void check(const Body& body) {
    for (const auto& s : body) {
      generation = generation || s->kind == Stmt::Kind::kGeneration;
      for (const Expr* e : {s->expr.get(), s->filter.get()}) check(e);
      for (const auto& [condition, branch] : s->branches) {
        check(condition.get());
        check(branch);
      }
      check(s->body);
      check(s->else_body);
    }
  }

  void check(const Expr* e) {
    if (!e) return;
    if (e->kind == Expr::Kind::kFilter && !has_filter(e->name))
      throw SyntaxError{"no filter named '" + e->name + "'", e->line, e->column};
    if (e->kind == Expr::Kind::kTest && !has_test(e->name))
      throw SyntaxError{"no test named '" + e->name + "'", e->line, e->column};
    for (const auto& arg : e->args) check(arg.get());
    for (const auto& kw : e->kwargs) check(kw.second.get());
  }
};

}  // namespace

}  // namespace jinja

JinjaTemplate::JinjaTemplate(const std::string& source, std::string name) : name_(std::move(name)) {
  try {
    auto body =
        std::make_shared<jinja::Body>(jinja::parse_template(jinja::Lexer(source).tokenize()));
    jinja::Checker checker;
    checker.check(*body);
    has_generation_ = checker.generation;
    body_ = std::move(body);
  } catch (const jinja::SyntaxError& e) {
    DST_THROW(ConfigError, name_ << ":" << e.line << ":" << e.column
                                 << ": chat template syntax error: " << e.message);
  }
}

JinjaTemplate::Output JinjaTemplate::render(const nlohmann::ordered_json& context,
                                            const std::string& where) const {
  Output out;
  try {
    jinja::Evaluator(context, out).run(*body_);
  } catch (const jinja::EvalError& e) {
    if (e.raised)
      DST_THROW(DataError, where << ": the chat template " << name_ << " raised an exception (line "
                                 << e.line << "): " << one_line(e.what()));
    DST_THROW(DataError, where << ": " << name_ << ":" << e.line << ": " << one_line(e.what()));
  }
  return out;
}

}  // namespace dst

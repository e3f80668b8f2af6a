#include <algorithm>
#include <cstdlib>

#include "data/jinja_ast.h"

namespace dst::jinja {

namespace {

using Type = Token::Type;

ExprPtr node(Expr::Kind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

ExprPtr node(Expr::Kind kind, int line, ExprPtr first) {
  ExprPtr e = node(kind, line);
  e->args.push_back(std::move(first));
  return e;
}

std::unique_ptr<Stmt> statement(Stmt::Kind kind, int line) {
  auto s = std::make_unique<Stmt>();
  s->kind = kind;
  s->line = line;
  return s;
}

std::string describe(const Token& t) {
  switch (t.type) {
    case Type::kEnd:
      return "end of template";
    case Type::kBlockEnd:
      return "end of statement block";
    case Type::kVarEnd:
      return "end of print statement";
    case Type::kString:
      return "string";
    case Type::kText:
      return "template data";
    default:
      return t.value;
  }
}

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : t_(tokens) {}

  Body parse_all() { return subparse({}); }

 private:
  // ----- token helpers -----
  const Token& cur() const { return t_[i_]; }
  const Token& peek() const { return t_[std::min(i_ + 1, t_.size() - 1)]; }
  bool is_op(const char* op) const { return cur().type == Type::kOperator && cur().value == op; }
  bool is_name(const char* n) const { return cur().type == Type::kName && cur().value == n; }
  bool skip_op(const char* op) { return is_op(op) ? (++i_, true) : false; }
  bool skip_name(const char* n) { return is_name(n) ? (++i_, true) : false; }
  [[noreturn]] void fail(const std::string& message) const {
    throw SyntaxError{message, cur().line, cur().column};
  }
  void expect(Type type, const char* what) {
    if (cur().type != type)
      fail(std::string("expected ") + what + ", got '" + describe(cur()) + "'");
    ++i_;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected '") + op + "', got '" + describe(cur()) + "'");
  }
  std::string expect_name() {
    if (cur().type != Type::kName) fail("expected a name, got '" + describe(cur()) + "'");
    return t_[i_++].value;
  }
  void end_block() { expect(Type::kBlockEnd, "'%}'"); }

  // ----- statements -----
  // Statements up to a `{% name %}` tag with a name in `ends`; stops on its name token.
  Body subparse(const std::vector<std::string>& ends) {
    Body body;
    while (true) {
      const Token& tok = cur();
      if (tok.type == Type::kEnd) {
        if (ends.empty()) return body;
        std::string names;
        for (const std::string& e : ends) names += (names.empty() ? "'" : " or '") + e + "'";
        fail("unexpected end of template, expected " + names);
      }
      if (tok.type == Type::kText) {
        body.push_back(statement(Stmt::Kind::kText, tok.line));
        body.back()->text = tok.value;
        ++i_;
      } else if (tok.type == Type::kVarBegin) {
        ++i_;
        body.push_back(statement(Stmt::Kind::kOutput, tok.line));
        body.back()->expr = parse_tuple();
        expect(Type::kVarEnd, "'}}'");
      } else if (tok.type == Type::kBlockBegin) {
        ++i_;
        if (cur().type == Type::kName &&
            std::find(ends.begin(), ends.end(), cur().value) != ends.end())
          return body;
        body.push_back(parse_statement());
      } else {
        fail("unexpected '" + describe(tok) + "'");
      }
    }
  }

  std::unique_ptr<Stmt> parse_statement() {
    const int line = cur().line;
    const std::string name = expect_name();
    if (name == "if") return parse_if(line);
    if (name == "for") return parse_for(line);
    if (name == "set") return parse_set(line);
    if (name == "generation") {
      auto s = statement(Stmt::Kind::kGeneration, line);
      end_block();
      s->body = subparse({"endgeneration"});
      ++i_;
      end_block();
      return s;
    }
    if (name == "break" || name == "continue") {
      end_block();
      return statement(name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, line);
    }
    --i_;
    if (name.rfind("end", 0) == 0 || name == "elif" || name == "else")
      fail("unexpected tag '" + name + "'");
    fail("unknown tag '" + name + "'");
  }

  std::unique_ptr<Stmt> parse_if(int line) {
    auto s = statement(Stmt::Kind::kIf, line);
    ExprPtr condition = parse_tuple();
    while (true) {
      end_block();
      Body body = subparse({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(condition), std::move(body));
      const std::string tag = t_[i_++].value;
      if (tag == "elif") {
        condition = parse_tuple();
      } else if (tag == "else") {
        end_block();
        s->branches.emplace_back(nullptr, subparse({"endif"}));
        ++i_;
        break;
      } else {
        break;
      }
    }
    end_block();
    return s;
  }

  std::unique_ptr<Stmt> parse_for(int line) {
    auto s = statement(Stmt::Kind::kFor, line);
    s->targets = parse_names();
    if (!skip_name("in")) fail("expected 'in', got '" + describe(cur()) + "'");
    s->expr = parse_tuple(false, "recursive");
    if (skip_name("if")) s->filter = parse_expression();
    if (is_name("recursive")) fail("recursive for loops are not supported");
    end_block();
    s->body = subparse({"endfor", "else"});
    if (t_[i_++].value == "else") {
      end_block();
      s->else_body = subparse({"endfor"});
      ++i_;
    }
    end_block();
    return s;
  }

  std::unique_ptr<Stmt> parse_set(int line) {
    auto s = statement(Stmt::Kind::kSet, line);
    if (cur().type == Type::kName && peek().type == Type::kOperator && peek().value == ".") {
      s->targets.push_back(expect_name());
      ++i_;
      s->attribute = expect_name();
    } else {
      s->targets = parse_names();
    }
    if (skip_op("=")) {
      s->expr = parse_tuple();
      end_block();
      return s;
    }
    s->kind = Stmt::Kind::kSetBlock;
    if (!s->attribute.empty() || s->targets.size() != 1) fail("expected '='");
    if (is_op("|")) s->filter = parse_filter(nullptr);
    end_block();
    s->body = subparse({"endset"});
    ++i_;
    end_block();
    return s;
  }

  // `a` or `a, b` or `(a, b)`: assignment targets.
  std::vector<std::string> parse_names() {
    const bool parenthesised = skip_op("(");
    std::vector<std::string> names{expect_name()};
    while (skip_op(",")) {
      if (cur().type != Type::kName || is_name("in")) break;
      names.push_back(expect_name());
    }
    if (parenthesised) expect_op(")");
    for (const std::string& n : names)
      if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" || n == "None")
        fail("cannot assign to '" + n + "'");
    return names;
  }

  // ----- expressions, lowest precedence first -----
  bool tuple_end(const char* extra) const {
    return cur().type == Type::kVarEnd || cur().type == Type::kBlockEnd || is_op(")") ||
           (extra && is_name(extra));
  }

  // `a` or `a, b, ...` (a tuple, evaluated as a list).
  ExprPtr parse_tuple(bool with_condition = true, const char* extra_end = nullptr) {
    const int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (tuple_end(extra_end)) break;
      items.push_back(with_condition ? parse_expression() : parse_or());
      if (!is_op(",")) break;
      is_tuple = true;
    }
    if (!is_tuple) {
      if (items.empty()) fail("expected an expression, got '" + describe(cur()) + "'");
      return std::move(items[0]);
    }
    ExprPtr list = node(Expr::Kind::kList, line);
    list->args = std::move(items);
    return list;
  }

  ExprPtr parse_expression() {
    const int line = cur().line;
    ExprPtr value = parse_or();
    while (skip_name("if")) {
      ExprPtr e = node(Expr::Kind::kCondition, line, std::move(value));
      e->args.push_back(parse_or());
      e->args.push_back(skip_name("else") ? parse_expression() : nullptr);
      value = std::move(e);
    }
    return value;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      ExprPtr e = node(Expr::Kind::kOr, t_[i_++].line, std::move(left));
      e->args.push_back(parse_and());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      ExprPtr e = node(Expr::Kind::kAnd, t_[i_++].line, std::move(left));
      e->args.push_back(parse_not());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (!is_name("not")) return parse_compare();
    const int line = t_[i_++].line;
    return node(Expr::Kind::kNot, line, parse_not());
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    ExprPtr e;
    while (true) {
      std::string op;
      if (cur().type == Type::kOperator &&
          (cur().value == "==" || cur().value == "!=" || cur().value == "<" ||
           cur().value == "<=" || cur().value == ">" || cur().value == ">="))
        op = t_[i_++].value;
      else if (skip_name("in"))
        op = "in";
      else if (is_name("not") && peek().type == Type::kName && peek().value == "in") {
        i_ += 2;
        op = "notin";
      } else {
        break;
      }
      if (!e) e = node(Expr::Kind::kCompare, line, std::move(first));
      e->ops.push_back(op);
      e->args.push_back(parse_math1());
    }
    return e ? std::move(e) : std::move(first);
  }

  ExprPtr binary(ExprPtr left, const std::string& op, ExprPtr right, int line) {
    ExprPtr e = node(Expr::Kind::kBinary, line, std::move(left));
    e->name = op;
    e->args.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& op = t_[i_++];
      left = binary(std::move(left), op.value, parse_concat(), op.line);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    ExprPtr e = node(Expr::Kind::kConcat, cur().line, std::move(first));
    while (skip_op("~")) e->args.push_back(parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& op = t_[i_++];
      left = binary(std::move(left), op.value, parse_pow(), op.line);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary();
    while (is_op("**")) {
      const Token& op = t_[i_++];
      left = binary(std::move(left), op.value, parse_unary(), op.line);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter = true) {
    ExprPtr e;
    if (is_op("-")) {
      const int line = t_[i_++].line;
      e = node(Expr::Kind::kNegate, line, parse_unary(false));
    } else if (skip_op("+")) {
      e = parse_unary(false);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    return with_filter ? parse_filter_expr(std::move(e)) : std::move(e);
  }

  ExprPtr literal(Json value, int line) {
    ExprPtr e = node(Expr::Kind::kLiteral, line);
    e->literal = std::move(value);
    return e;
  }

  ExprPtr parse_primary() {
    const Token& tok = cur();
    ++i_;
    switch (tok.type) {
      case Type::kName:
        if (tok.value == "true" || tok.value == "True") return literal(true, tok.line);
        if (tok.value == "false" || tok.value == "False") return literal(false, tok.line);
        if (tok.value == "none" || tok.value == "None") return literal(nullptr, tok.line);
        {
          ExprPtr e = node(Expr::Kind::kName, tok.line);
          e->name = tok.value;
          return e;
        }
      case Type::kString: {
        std::string text = tok.value;
        while (cur().type == Type::kString) text += t_[i_++].value;
        return literal(text, tok.line);
      }
      case Type::kInteger:
        return literal(std::strtoll(tok.value.c_str(), nullptr, 10), tok.line);
      case Type::kFloat:
        return literal(std::strtod(tok.value.c_str(), nullptr), tok.line);
      default:
        break;
    }
    if (tok.type == Type::kOperator && tok.value == "(") {
      if (skip_op(")")) return node(Expr::Kind::kList, tok.line);
      ExprPtr e = parse_tuple();
      expect_op(")");
      return e;
    }
    if (tok.type == Type::kOperator && (tok.value == "[" || tok.value == "{"))
      return parse_container(tok.value == "{", tok.line);
    --i_;
    fail("unexpected '" + describe(tok) + "'");
  }

  ExprPtr parse_container(bool dict, int line) {
    ExprPtr e = node(dict ? Expr::Kind::kDict : Expr::Kind::kList, line);
    const char* close = dict ? "}" : "]";
    while (!is_op(close)) {
      if (!e->args.empty()) expect_op(",");
      if (is_op(close)) break;
      e->args.push_back(parse_expression());
      if (!dict) continue;
      expect_op(":");
      e->args.push_back(parse_expression());
    }
    ++i_;
    return e;
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op("."))
        e = parse_dot(std::move(e));
      else if (is_op("["))
        e = parse_subscript(std::move(e));
      else if (is_op("("))
        e = parse_call(std::move(e));
      else
        return e;
    }
  }

  ExprPtr parse_dot(ExprPtr object) {
    const int line = t_[i_++].line;
    if (cur().type == Type::kInteger) {
      ExprPtr e = node(Expr::Kind::kGetItem, line, std::move(object));
      e->args.push_back(literal(std::strtoll(t_[i_++].value.c_str(), nullptr, 10), line));
      return e;
    }
    if (cur().type != Type::kName) fail("expected name or number");
    ExprPtr e = node(Expr::Kind::kGetAttr, line, std::move(object));
    e->name = t_[i_++].value;
    return e;
  }

  ExprPtr parse_subscript(ExprPtr object) {
    const int line = t_[i_++].line;
    std::vector<ExprPtr> items;
    while (!is_op("]")) {
      if (!items.empty()) expect_op(",");
      items.push_back(parse_subscribed());
    }
    ++i_;
    if (items.empty()) fail("expected a subscript");
    ExprPtr e = node(Expr::Kind::kGetItem, line, std::move(object));
    if (items.size() == 1) {
      e->args.push_back(std::move(items[0]));
    } else {
      e->args.push_back(node(Expr::Kind::kList, line));
      e->args.back()->args = std::move(items);
    }
    return e;
  }

  // `x`, or a slice `start:stop:step` with any part left out.
  ExprPtr parse_subscribed() {
    const int line = cur().line;
    ExprPtr start;
    if (!is_op(":")) {
      start = parse_expression();
      if (!is_op(":")) return start;
    }
    ExprPtr e = node(Expr::Kind::kSlice, line, std::move(start));
    for (int part = 0; part < 2; ++part) {
      if (!skip_op(":") && part == 0) fail("expected ':'");
      const bool absent = is_op("]") || is_op(",") || is_op(":");
      e->args.push_back(absent ? nullptr : parse_expression());
      if (!is_op(":")) {
        if (part == 0) e->args.push_back(nullptr);
        break;
      }
    }
    return e;
  }

  void parse_arguments(Expr& e) {
    expect_op("(");
    for (bool first = true; !is_op(")"); first = false) {
      if (!first) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**")) fail("*args and **kwargs are not supported");
      if (cur().type == Type::kName && peek().type == Type::kOperator && peek().value == "=") {
        std::string key = expect_name();
        ++i_;
        e.kwargs.emplace_back(std::move(key), parse_expression());
      } else {
        if (!e.kwargs.empty()) fail("positional argument after keyword argument");
        e.args.push_back(parse_expression());
      }
    }
    ++i_;
  }

  ExprPtr parse_call(ExprPtr callee) {
    ExprPtr e = node(Expr::Kind::kCall, cur().line, std::move(callee));
    parse_arguments(*e);
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|"))
        e = parse_filter(std::move(e));
      else if (is_name("is"))
        e = parse_test(std::move(e));
      else if (is_op("("))
        e = parse_call(std::move(e));
      else
        return e;
    }
  }

  // `| name` or `| name(args)`, repeated; `value` is null for a set block's filter.
  ExprPtr parse_filter(ExprPtr value) {
    while (skip_op("|")) {
      ExprPtr e = node(Expr::Kind::kFilter, cur().line, std::move(value));
      e->column = cur().column;
      e->name = expect_name();
      if (is_op("(")) parse_arguments(*e);
      value = std::move(e);
    }
    return value;
  }

  ExprPtr parse_test(ExprPtr value) {
    const int line = t_[i_++].line;
    const bool negated = skip_name("not");
    ExprPtr e = node(Expr::Kind::kTest, line, std::move(value));
    e->column = cur().column;
    e->name = expect_name();
    const Type t = cur().type;
    if (is_op("(")) {
      parse_arguments(*e);
    } else if ((t == Type::kName || t == Type::kString || t == Type::kInteger ||
                t == Type::kFloat || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("you cannot chain multiple tests with is");
      e->args.push_back(parse_postfix(parse_primary()));
    }
    return negated ? node(Expr::Kind::kNot, line, std::move(e)) : std::move(e);
  }

  const std::vector<Token>& t_;
  size_t i_ = 0;
};

}  // namespace

Body parse_template(const std::vector<Token>& tokens) { return Parser(tokens).parse_all(); }

}  // namespace dst::jinja

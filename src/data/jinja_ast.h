// The Jinja syntax tree and its parser (data/jinja_template.h): expressions with jinja2's
// precedence (conditional, or, and, not, comparisons, + -, ~, * / // %, **, unary, then
// subscripts, calls, filters and tests), and the statements chat templates use: output, if, for
// (with a filter and else), set (names, tuples, namespace attributes, blocks), generation,
// break and continue. Private.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/jinja_lexer.h"
#include "data/jinja_value.h"

namespace dst::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,
    kName,
    kList,
    kDict,
    kGetAttr,
    kGetItem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kNegate,
    kNot,
    kBinary,
    kAnd,
    kOr,
    kCompare,
    kConcat,
    kCondition
  };
  Kind kind;
  int line = 0;
  int column = 0;    // kFilter, kTest: of the name
  Json literal;      // kLiteral
  std::string name;  // name, attribute, filter, test or binary operator
  // Operands in order: the object (attribute, item, call, filter, test), then the arguments;
  // kDict: key, value, key, value...; kSlice: start, stop, step (null for absent); kCompare:
  // the first operand, then one per operator in `ops`; kCondition: value, condition, else.
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare: ==, !=, <, <=, >, >=, in, notin
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kGeneration, kBreak, kContinue };
  Kind kind;
  int line = 0;
  std::string text;                  // kText
  ExprPtr expr;                      // output, set value, for iterable
  std::vector<std::string> targets;  // for / set names (several: unpacking)
  std::string attribute;             // set ns.attribute (then targets = {ns})
  ExprPtr filter;                    // for ... if filter; set block: the filter (kFilter on null)
  std::vector<std::pair<ExprPtr, Body>> branches;  // if / elif (else: a null condition)
  Body body;
  Body else_body;  // for ... else
};

// Parses the tokens of one template. Throws SyntaxError.
Body parse_template(const std::vector<Token>& tokens);

}  // namespace dst::jinja

// The Jinja lexer (data/jinja_template.h): template text → tokens, as jinja2's lexer with the
// options transformers compiles chat templates with (trim_blocks, lstrip_blocks): newlines
// normalised to \n and one trailing newline dropped, `{%- -%}` / `{{- -}}` / `{#- -#}` strip the
// whitespace beside them, `+` turns trimming off for one tag, comments vanish. Private.
#pragma once

#include <string>
#include <vector>

namespace dst::jinja {

struct Token {
  enum class Type {
    kText,
    kVarBegin,
    kVarEnd,
    kBlockBegin,
    kBlockEnd,
    kName,
    kString,
    kInteger,
    kFloat,
    kOperator,
    kEnd
  };
  Type type;
  std::string value;  // text, name, operator, decoded string literal or number spelling
  int line = 1;
  int column = 1;
};

// A syntax error at a line and column (the Template names the source).
struct SyntaxError {
  std::string message;
  int line;
  int column;
};

class Lexer {
 public:
  explicit Lexer(const std::string& source);
  // All tokens, ending with kEnd. Throws SyntaxError.
  std::vector<Token> tokenize();

 private:
  void lex_data();
  void lex_comment(size_t tag, size_t body);
  void lex_tag(bool block, size_t body);
  bool lex_tag_end(bool block);
  void lex_token();
  void lex_number();
  void lex_string();
  void lex_operator();
  void emit(Token::Type type, std::string value, size_t at);
  [[noreturn]] void fail(const std::string& message, size_t at) const;
  size_t skip_space(size_t at) const;

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
  std::vector<char> brackets_;  // closing brackets expected inside the current tag
  size_t pos_ = 0;
  bool line_starting_ = true;
};

}  // namespace dst::jinja

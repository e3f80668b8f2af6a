#include "data/jinja_lexer.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "data/jinja_value.h"
#include "data/utf8.h"

namespace dst::jinja {

namespace {

// \r\n and \r become \n, and one trailing newline goes (jinja2's keep_trailing_newline=False).
std::string normalize_newlines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] != '\r')
      out += source[i];
    else if (i + 1 < source.size() && source[i + 1] == '\n')
      continue;
    else
      out += '\n';
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool all_space(const std::string& text, size_t begin) {
  for (size_t i = begin; i < text.size(); i += detail::utf8_char_length(detail::byte_at(text, i)))
    if (!is_space(detail::code_point_at(text, i))) return false;
  return begin < text.size();
}

std::string rstrip_space(std::string text) {
  while (!text.empty()) {
    const size_t start = detail::previous_char_start(text, text.size());
    if (!is_space(detail::code_point_at(text, start))) break;
    text.resize(start);
  }
  return text;
}

bool is_name_char(unsigned char c, bool first) {
  return c == '_' || std::isalpha(c) || c >= 0x80 || (!first && std::isdigit(c));
}

int hex_value(const std::string& digits) {
  for (char c : digits)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return -1;
  return static_cast<int>(std::strtol(digits.c_str(), nullptr, 16));
}

}  // namespace

Lexer::Lexer(const std::string& source) : src_(normalize_newlines(source)) {
  line_starts_.push_back(0);
  for (size_t i = 0; i < src_.size(); ++i)
    if (src_[i] == '\n') line_starts_.push_back(i + 1);
}

std::vector<Token> Lexer::tokenize() {
  while (pos_ < src_.size()) lex_data();
  emit(Token::Type::kEnd, "", src_.size());
  return std::move(tokens_);
}

void Lexer::emit(Token::Type type, std::string value, size_t at) {
  const auto line = std::upper_bound(line_starts_.begin(), line_starts_.end(), at) - 1;
  tokens_.push_back({type, std::move(value), static_cast<int>(line - line_starts_.begin()) + 1,
                     static_cast<int>(at - *line) + 1});
}

void Lexer::fail(const std::string& message, size_t at) const {
  const auto line = std::upper_bound(line_starts_.begin(), line_starts_.end(), at) - 1;
  throw SyntaxError{message, static_cast<int>(line - line_starts_.begin()) + 1,
                    static_cast<int>(at - *line) + 1};
}

size_t Lexer::skip_space(size_t at) const {
  while (at < src_.size() && is_space(detail::code_point_at(src_, at)))
    at += detail::utf8_char_length(detail::byte_at(src_, at));
  return at;
}

// Text up to the next tag, with the tag's whitespace control applied to it, then the tag.
void Lexer::lex_data() {
  size_t tag = std::string::npos;
  for (const char* open : {"{{", "{%", "{#"}) tag = std::min(tag, src_.find(open, pos_));
  if (tag == std::string::npos) {
    emit(Token::Type::kText, src_.substr(pos_), pos_);
    pos_ = src_.size();
    return;
  }
  std::string text = src_.substr(pos_, tag - pos_);
  const char kind = src_[tag + 1];
  const char sign =
      tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
  if (sign == '-') {
    text = rstrip_space(std::move(text));
  } else if (sign != '+' && kind != '{') {  // lstrip_blocks: the tag's indentation goes
    const size_t line = text.rfind('\n') + 1;
    if ((line > 0 || line_starting_) && all_space(text, line)) text.resize(line);
  }
  if (!text.empty()) emit(Token::Type::kText, std::move(text), pos_);
  const size_t body = tag + 2 + (sign ? 1 : 0);
  if (kind == '#')
    lex_comment(tag, body);
  else
    lex_tag(kind == '%', tag);
}

void Lexer::lex_comment(size_t tag, size_t body) {
  const size_t close = src_.find("#}", body);
  if (close == std::string::npos) fail("missing end of comment tag", tag);
  const char sign = close > body ? src_[close - 1] : 0;
  pos_ = close + 2;
  if (sign == '-')
    pos_ = skip_space(pos_);
  else if (sign != '+' && pos_ < src_.size() && src_[pos_] == '\n')
    ++pos_;  // trim_blocks
  line_starting_ = src_[pos_ - 1] == '\n';
}

void Lexer::lex_tag(bool block, size_t tag) {
  emit(block ? Token::Type::kBlockBegin : Token::Type::kVarBegin, "", tag);
  pos_ = tag + 2;
  if (pos_ < src_.size() && (src_[pos_] == '-' || src_[pos_] == '+')) ++pos_;
  brackets_.clear();
  while (true) {
    pos_ = skip_space(pos_);
    if (pos_ >= src_.size())
      fail(std::string("unexpected end of template, '") + (block ? "%}" : "}}") + "' expected",
           tag);
    if (brackets_.empty() && lex_tag_end(block)) return;
    lex_token();
  }
}

bool Lexer::lex_tag_end(bool block) {
  const size_t at = pos_;
  auto at_text = [&](const char* s) {
    return src_.compare(pos_, std::char_traits<char>::length(s), s) == 0;
  };
  if (block && at_text("+%}")) {
    pos_ += 3;
  } else if (at_text(block ? "-%}" : "-}}")) {
    pos_ = skip_space(pos_ + 3);
  } else if (at_text(block ? "%}" : "}}")) {
    pos_ += 2;
    if (block && pos_ < src_.size() && src_[pos_] == '\n') ++pos_;  // trim_blocks
  } else {
    return false;
  }
  emit(block ? Token::Type::kBlockEnd : Token::Type::kVarEnd, "", at);
  line_starting_ = src_[pos_ - 1] == '\n';
  return true;
}

void Lexer::lex_token() {
  const auto c = static_cast<unsigned char>(src_[pos_]);
  if (std::isdigit(c)) return lex_number();
  if (c == '\'' || c == '"') return lex_string();
  if (!is_name_char(c, true)) return lex_operator();
  const size_t start = pos_;
  while (pos_ < src_.size() && is_name_char(static_cast<unsigned char>(src_[pos_]), false)) ++pos_;
  emit(Token::Type::kName, src_.substr(start, pos_ - start), start);
}

void Lexer::lex_number() {
  const size_t start = pos_;
  auto digits = [&] {
    while (pos_ < src_.size() &&
           (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_'))
      ++pos_;
  };
  auto digit_at = [&](size_t i) {
    return i < src_.size() && std::isdigit(static_cast<unsigned char>(src_[i]));
  };
  digits();
  bool is_float = false;
  if (pos_ < src_.size() && src_[pos_] == '.' && digit_at(pos_ + 1)) {
    ++pos_;
    digits();
    is_float = true;
  }
  if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
    const size_t sign =
        pos_ + 1 < src_.size() && (src_[pos_ + 1] == '+' || src_[pos_ + 1] == '-') ? 1 : 0;
    if (digit_at(pos_ + 1 + sign)) {
      pos_ += 1 + sign;
      digits();
      is_float = true;
    }
  }
  std::string spelling = src_.substr(start, pos_ - start);
  spelling.erase(std::remove(spelling.begin(), spelling.end(), '_'), spelling.end());
  emit(is_float ? Token::Type::kFloat : Token::Type::kInteger, spelling, start);
}

// A string literal with Python's escapes (\n, \t, \\, \', \", \xNN, \uNNNN, \UNNNNNNNN, octal).
void Lexer::lex_string() {
  const size_t start = pos_;
  const char quote = src_[pos_++];
  std::string value;
  while (pos_ < src_.size() && src_[pos_] != quote) {
    if (src_[pos_] != '\\' || pos_ + 1 >= src_.size()) {
      value += src_[pos_++];
      continue;
    }
    const char e = src_[pos_ + 1];
    pos_ += 2;
    static const std::string simple = "\\'\"abfnrtv", decoded = "\\'\"\a\b\f\n\r\t\v";
    if (simple.find(e) != std::string::npos) {
      value += decoded[simple.find(e)];
    } else if (e == '\n') {
    } else if (e >= '0' && e <= '7') {
      int code = e - '0';
      for (int k = 0; k < 2 && pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '7'; ++k)
        code = code * 8 + (src_[pos_++] - '0');
      detail::append_utf8(value, static_cast<uint32_t>(code));
    } else if (e == 'x' || e == 'u' || e == 'U') {
      const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
      const int code = hex_value(src_.substr(pos_, n));
      if (code < 0 || pos_ + n > src_.size())
        fail(std::string("truncated \\") + e + " escape", pos_ - 2);
      detail::append_utf8(value, static_cast<uint32_t>(code));
      pos_ += n;
    } else {
      value += '\\';
      value += e;
    }
  }
  if (pos_ >= src_.size()) fail("unterminated string literal", start);
  ++pos_;
  emit(Token::Type::kString, std::move(value), start);
}

void Lexer::lex_operator() {
  for (const char* op : {"//", "**", "==", "!=", ">=", "<="}) {
    if (src_.compare(pos_, 2, op) == 0) {
      emit(Token::Type::kOperator, op, pos_);
      pos_ += 2;
      return;
    }
  }
  const char c = src_[pos_];
  if (std::string("+-/*%~[](){}><=.:|,;").find(c) == std::string::npos)
    fail(std::string("unexpected char '") + c + "'", pos_);
  if (c == '(' || c == '[' || c == '{') brackets_.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
  if (c == ')' || c == ']' || c == '}') {
    if (brackets_.empty()) fail(std::string("unexpected '") + c + "'", pos_);
    if (brackets_.back() != c)
      fail(std::string("unexpected '") + c + "', expected '" + brackets_.back() + "'", pos_);
    brackets_.pop_back();
  }
  emit(Token::Type::kOperator, std::string(1, c), pos_);
  ++pos_;
}

}  // namespace dst::jinja

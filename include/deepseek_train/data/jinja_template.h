// A small Jinja2 interpreter for the chat templates Hugging Face models carry
// (tokenizer_config.json's "chat_template", chat_template.jinja), rendering as transformers'
// apply_chat_template does: jinja2 with trim_blocks and lstrip_blocks, the loopcontrols
// extension, transformers' tojson, raise_exception, namespace and strftime_now, and
// {% generation %} blocks. Supported: {{ }}, {% if/elif/else %}, {% for %} with a filter, else,
// loop.* and break/continue, {% set %} (names, tuples, namespace attributes, blocks), comments,
// whitespace control, Python literals, operators, subscripts and slices, conditional
// expressions, and the filters, tests and methods listed in src/data/jinja_builtins.h. Not
// supported (a ConfigError when the template is read): macros, call blocks,
// include/extends/import, raw blocks, recursive loops, other filters and tests. Undefined names
// render as "" (jinja2's default Undefined); an attribute or item of an undefined value, or
// arithmetic on one, is an error. Known differences: case mapping is ASCII only, a printed tuple
// shows as a list. Torch-free.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace dst {

namespace jinja {
struct Stmt;
}

class JinjaTemplate {
 public:
  // Where an assistant message's content reached the output: bytes [begin, end) of the text
  // are (a stripped part of) messages[message].content, followed from the lookup of a
  // message's `content` whose role is assistant through +, ~, trim/strip, set and namespaces.
  struct Traced {
    size_t begin;
    size_t end;
    int message;
  };
  struct Output {
    std::string text;
    std::vector<std::pair<size_t, size_t>> generation;  // {% generation %} blocks: byte ranges
    std::vector<Traced> assistant_content;
  };

  // Parses `source`. `name` (a file path, or a description) names it in errors: a syntax error
  // or an unknown filter or test is a one-line ConfigError "name:line:column: message".
  JinjaTemplate(const std::string& source, std::string name);

  // Renders with the variables of `context`, a JSON object. An evaluation error or the
  // template's raise_exception(message) is a DataError naming `where`, the template and line.
  Output render(const nlohmann::ordered_json& context, const std::string& where) const;

  const std::string& name() const { return name_; }
  // Whether the template has a {% generation %} block anywhere.
  bool has_generation() const { return has_generation_; }

 private:
  std::string name_;
  std::shared_ptr<const std::vector<std::unique_ptr<jinja::Stmt>>> body_;
  bool has_generation_ = false;
};

}  // namespace dst

// Tests of the Jinja interpreter (data/jinja_template.h) and of chat templates read from a
// model's files (data/chat_template.h). Expected texts are what jinja2 3.1 renders with
// transformers' settings (checked when these cases were written; the interop test compares
// whole chats against transformers).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "deepseek_train/core/error.h"
#include "deepseek_train/core/sha256.h"
#include "deepseek_train/data/byte_tokenizer.h"
#include "deepseek_train/data/chat_template.h"
#include "deepseek_train/data/jinja_template.h"

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

Json messages_context() {
  return {{"messages", Json::array({{{"role", "system"}, {"content", " Be brief.\n"}},
                                    {{"role", "user"}, {"content", "say ok"}},
                                    {{"role", "assistant"}, {"content", " ok "}},
                                    {{"role", "user"}, {"content", "again"}},
                                    {{"role", "assistant"}, {"content", "ok"}}})},
          {"bos_token", "<s>"},
          {"eos_token", "</s>"},
          {"tools", nullptr}};
}

std::string render(const std::string& source, const Json& context = messages_context()) {
  return dst::JinjaTemplate(source, "test.jinja").render(context, "record 1").text;
}

template <typename E, typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("no error thrown");
  return "";
}

std::string render_error(const std::string& source) {
  return error_of<dst::DataError>([&] { render(source); });
}

std::string syntax_error(const std::string& source) {
  return error_of<dst::ConfigError>([&] { dst::JinjaTemplate(source, "model/chat.jinja"); });
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("dst_test_jinja_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream out(path / name, std::ios::binary);
    out << content;
    return (path / name).string();
  }
};

std::vector<dst::ChatMessage> chat(const std::vector<std::pair<std::string, std::string>>& turns) {
  std::vector<dst::ChatMessage> out;
  for (const auto& [role, content] : turns) out.push_back({role, content});
  return out;
}

std::vector<std::string> trained(const dst::RenderedChat& c) {
  std::vector<std::string> out;
  for (const auto& [begin, end] : c.trained) out.push_back(c.text.substr(begin, end - begin));
  return out;
}

}  // namespace

TEST_CASE("jinja expressions follow Python", "[data][jinja]") {
  CHECK(render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 % 3 }} "
               "{{ 2 ** 10 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 10 - 2 - 3 }}") ==
        "7 9 3.5 3 2 1024 0.30000000000000004 1e+16 5");
  CHECK(render("{{ 'a' ~ 1 ~ none }} {{ 'ab' * 2 }} {{ [1] + [2] }} {{ none }} {{ true }} "
               "{{ [1, 'a', none, 1.5] }} {{ {'k': 'v'} }}") ==
        "a1None abab [1, 2] None True [1, 'a', None, 1.5] {'k': 'v'}");
  CHECK(render("{{ 1 == true }} {{ 'a' in 'abc' }} {{ 1 not in [1] }} {{ 'k' in {'k': 1} }} "
               "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ not none }}") ==
        "True True False True True False True");
  // and / or give an operand, as in Python; an if-expression without else is undefined.
  CHECK(render("{{ true and 'x' }}|{{ 0 or 'y' }}|{{ false or [] }}|{{ 'x' if false }}|"
               "{{ 'a' if 1 else 'b' }}") == "x|y|[]||a");
  // Subscripts, slices (by code point), attributes, negative indexes, out of range: undefined.
  CHECK(render("{{ 'abc'[::-1] }} {{ 'héllo'[1:3] }} {{ [1,2,3,4,5][1:-1] }} {{ [1,2,3][::-2] }} "
               "{{ messages[-1]['content'] }} {{ messages[0].role }} [{{ [1][5] }}] "
               "{{ messages[1:] | length }}") == "cba él [2, 3, 4] [3, 1] ok system [] 4");
  CHECK(render("{{ 'It\\'s' }} {{ \"q'\" }} {{ 'x\\u00e9\\x41\\n' }}") == "It's q' xéA\n");
  // Undefined names render as nothing; tests see them.
  CHECK(render("[{{ nothing }}] {{ nothing is defined }} {{ messages[0].x is defined }} "
               "{{ tools is none }} {{ tools is defined }} {{ 'a' is string }} "
               "{{ 3 is divisibleby 3 }} {{ 2 is even }}") ==
        "[] False False True True True True True");
}

TEST_CASE("jinja filters and methods", "[data][jinja]") {
  CHECK(render("{{ ' x '|trim }}|{{ '\xE3\x80\x80x\xC2\xA0'|trim }}|{{ 'ab'|length }}|"
               "{{ 'aB'|upper }}|{{ 'aB'|lower }}|{{ 'héllo'|length }}") == "x|x|2|AB|ab|5");
  CHECK(render("{{ {'a': 1, 'b': [1, 2], 'c': none, 'd': 'é\"'}|tojson }}") ==
        "{\"a\": 1, \"b\": [1, 2], \"c\": null, \"d\": \"é\\\"\"}");
  CHECK(render("{{ [1]|tojson(indent=2) }}") == "[\n  1\n]");
  CHECK(render("{{ x|default('d') }} {{ ''|default('e', true) }} {{ [1, 2]|first }} "
               "{{ [1, 2]|last }} {{ [1, 2, 3]|join('-') }} {{ 'abc'|replace('b', 'X') }} "
               "{{ 12|string ~ 'x' }} {{ '12'|int + 1 }}") == "d e 1 2 1-2-3 aXc 12x 13");
  CHECK(render("{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')"
               "|join('|') }} {{ messages|rejectattr('role', 'eq', 'user')|list|length }} "
               "{{ [3, 1, 2]|sort }} {{ [1, 1, 2]|unique|list }}") ==
        "say ok|again 3 [1, 2, 3] [1, 2]");
  CHECK(render("{{ ' a '.strip() }}|{{ 'xyx'.strip('x') }}|{{ 'a b  c'.split() }}|"
               "{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('a') }}|{{ 'abc'.endswith(('x', 'c')) "
               "}}|{{ 'a-b-c'.rsplit('-', 1) }}") ==
        "a|y|['a', 'b', 'c']|['a', 'b']|True|True|['a-b', 'c']");
  CHECK(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"
               "{{ messages[0].get('role') }} {{ messages[0].get('x', 'd') }}") ==
        "a=1;b=2;system d");
}

TEST_CASE("jinja loops, set and namespace", "[data][jinja]") {
  CHECK(render("{% for m in ms if m != 2 %}{{ loop.index }}/{{ loop.length }}"
               "{{ loop.first }}{{ loop.last }} {% endfor %}",
               {{"ms", {1, 2, 3}}}) == "1/2TrueFalse 2/2FalseTrue ");
  CHECK(render("{% for x in [] %}x{% else %}empty{% endfor %}{% for x in nothing %}{% endfor %}") ==
        "empty");
  CHECK(render("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}"
               "{% if i == 3 %}{% break %}{% endif %}{{ i }}{{ loop.cycle('a', 'b') }}"
               "{% endfor %}") == "0a2a");
  // A set inside a loop is the iteration's own; a namespace carries state out.
  CHECK(render("{% set y = 0 %}{% for x in [1, 2] %}{{ y }}{% set y = x %}{{ y }},{% endfor %}"
               "{{ y }}") == "01,02,0");
  CHECK(render("{% set ns = namespace(total=0, seen=false) %}{% for x in [1, 2, 3] %}"
               "{% set ns.total = ns.total + x %}{% set ns.seen = true %}{% endfor %}"
               "{{ ns.total }} {{ ns.seen }}") == "6 True");
  CHECK(render("{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set c %}in {{ a }}{% endset %}[{{ c }}]"
               "{% set d | upper %}x{% endset %}{{ d }}") == "12[in 1]X");
}

TEST_CASE("jinja whitespace control as transformers sets it up", "[data][jinja]") {
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: a block tag's indentation.
  CHECK(render("  {% if true %}\n  x\n  {% endif %}\n  y  {% if true %}z{% endif %}  \n") ==
        "  x\n  y  z  ");
  CHECK(render("{{ 1 }}\n{% if true %}\n  {{ 2 }}\n{% endif %}\n") == "1\n  2\n");
  // - strips all whitespace on its side, + keeps it; comments vanish; \r\n becomes \n and one
  // trailing newline is dropped.
  CHECK(render("a \n {%- if true -%} \n b {%+ if true %}c{% endif +%}\nd{% endif %}") == "ab c\nd");
  CHECK(render("a\n  {# comment #}\n  b\n{#- x -#}\n  c {{- ' d ' -}}  e\r\nf\n\n") ==
        "a\n  bc d e\nf\n");
}

TEST_CASE("jinja errors name the template, the line and the record", "[data][jinja]") {
  // Syntax errors: one line, file:line:column, when the template is read.
  const std::string unclosed = syntax_error("x\n{% if a %}\ny");
  CHECK(contains(unclosed,
                 "model/chat.jinja:3:2: chat template syntax error: unexpected end of "
                 "template, expected 'elif' or 'else' or 'endif'"));
  CHECK(unclosed.find('\n') == std::string::npos);
  CHECK(contains(syntax_error("{{ 1 +* 2 }}"),
                 "model/chat.jinja:1:7: chat template syntax "
                 "error: unexpected '*'"));
  CHECK(contains(syntax_error("{{ x | nosuch }}"),
                 ":1:8: chat template syntax error: no filter "
                 "named 'nosuch'"));
  CHECK(contains(syntax_error("\n{% endfor %}"),
                 ":2:4: chat template syntax error: unexpected "
                 "tag 'endfor'"));
  CHECK(contains(syntax_error("{% macro m() %}{% endmacro %}"), "unknown tag 'macro'"));
  CHECK(contains(syntax_error("{{ 'abc }}"),
                 ":1:4: chat template syntax error: unterminated "
                 "string literal"));
  CHECK(contains(syntax_error("{# open"), "missing end of comment tag"));
  // Evaluation errors: DataError naming the record, the template and the line.
  CHECK(contains(render_error("line 1\n{{ a.b }}"), "record 1: test.jinja:2: 'a' is undefined"));
  CHECK(
      contains(render_error("{{ messages[0].content.x.y }}"), "'str object' has no attribute 'x'"));
  CHECK(contains(render_error("{{ nothing + 'x' }}"), "'nothing' is undefined"));
  CHECK(contains(render_error("{{ 'a' + 1 }}"),
                 "unsupported operand type(s) for +: 'str' and "
                 "'int'"));
  CHECK(contains(render_error("{% for x in 5 %}{% endfor %}"), "'int' object is not iterable"));
  CHECK(contains(render_error("\n\n{{ raise_exception('roles must alternate') }}"),
                 "record 1: the chat template test.jinja raised an exception (line 3): roles "
                 "must alternate"));
}

TEST_CASE("jinja generation blocks and traced assistant content", "[data][jinja]") {
  const dst::JinjaTemplate generation(
      "{% for m in messages %}{% if m.role == 'assistant' %}A:{% generation %}"
      "{{ m.content|trim }}</s>{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n"
      "{% endfor %}",
      "gen.jinja");
  CHECK(generation.has_generation());
  const auto out = generation.render(messages_context(), "r");
  REQUIRE(out.generation.size() == 2);
  CHECK(out.text.substr(out.generation[0].first,
                        out.generation[0].second - out.generation[0].first) == "ok</s>");
  // Without generation blocks, the interpreter follows assistant content to the output: the
  // user's "say ok" is not taken for the answer "ok".
  const dst::JinjaTemplate plain(
      "{% for m in messages %}{% set c = m['content'] | trim %}{{ m.role + ': ' + c }}\n"
      "{% endfor %}",
      "plain.jinja");
  CHECK_FALSE(plain.has_generation());
  const auto traced = plain.render(messages_context(), "r");
  CHECK(traced.text ==
        "system: Be brief.\nuser: say ok\nassistant: ok\nuser: again\nassistant: ok\n");
  REQUIRE(traced.assistant_content.size() == 2);
  CHECK(traced.assistant_content[0].message == 2);
  CHECK(traced.assistant_content[0].begin == traced.text.find("assistant: ok") + 11);
  CHECK(traced.assistant_content[0].end == traced.assistant_content[0].begin + 2);
  CHECK(traced.assistant_content[1].message == 4);
}

TEST_CASE("chat templates from a model's files", "[data][jinja]") {
  TempDir dir("files");
  const auto messages = chat({{"system", "Be brief."},
                              {"user", "Hi ok"},
                              {"assistant", " Hello. "},
                              {"user", "Bye?"},
                              {"assistant", "ok"}});
  const std::string llama2 =
      "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + "
      "m['content'] | trim + ' [/INST]' }}{% elif m['role'] == 'assistant' %}"
      "{{ ' ' + m['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}";
  // tokenizer_config.json: the template string and the special tokens ({content} or strings).
  dir.write("tokenizer_config.json", Json{{"chat_template", llama2},
                                          {"bos_token", {{"content", "<s>"}, {"special", true}}},
                                          {"eos_token", "</s>"}}
                                         .dump());
  const dst::ChatTemplate config =
      dst::ChatTemplate::load((dir.path / "tokenizer_config.json").string());
  CHECK_FALSE(config.builtin());
  CHECK(config.sha256() == dst::sha256_hex(llama2));
  const dst::RenderedChat rendered = config.render(messages, "rec");
  CHECK(rendered.text == "<s>[INST] Hi ok [/INST] Hello. </s><s>[INST] Bye? [/INST] ok </s>");
  // Each answer (as the template trimmed it) through the eos token that follows it.
  CHECK(trained(rendered) == std::vector<std::string>{"Hello. </s>", "ok </s>"});
  // The model folder and a .jinja file beside the config give the same; the list form's
  // "default" is chosen.
  CHECK(dst::ChatTemplate::load(dir.path.string()).render(messages, "rec").trained ==
        rendered.trained);
  dir.write("chat_template.jinja", llama2);
  const dst::ChatTemplate jinja =
      dst::ChatTemplate::load((dir.path / "chat_template.jinja").string());
  CHECK(jinja.render(messages, "rec").text == rendered.text);
  CHECK(dst::ChatTemplate::load(dir.path.string()).render(messages, "rec").text == rendered.text);
  dir.write("list.json",
            Json{{"chat_template", Json::array({{{"name", "tool_use"}, {"template", "x"}},
                                                {{"name", "default"}, {"template", llama2}}})},
                 {"bos_token", "<s>"},
                 {"eos_token", "</s>"}}
                .dump());
  CHECK(dst::ChatTemplate::load((dir.path / "list.json").string()).render(messages, "rec").text ==
        rendered.text);
  // A template that rewrites the answers: they are searched for in order instead.
  dir.write(
      "rewrite.jinja",
      "{% for m in messages %}{{ m.role }}: {{ m.content.split(' ')|join(' ') }}\n{% endfor %}");
  CHECK(trained(dst::ChatTemplate::load((dir.path / "rewrite.jinja").string())
                    .render(messages, "rec")) == std::vector<std::string>{"Hello.", "ok"});
  // Errors: one line naming the file.
  const std::string missing = error_of<dst::ConfigError>(
      [&] { dst::ChatTemplate::load(dir.path.string() + "/none.jinja"); });
  CHECK(contains(missing, "none.jinja: no such chat template file"));
  dir.write("empty_config.json", "{\"bos_token\": \"<s>\"}");
  CHECK(contains(error_of<dst::ConfigError>(
                     [&] { dst::ChatTemplate::load((dir.path / "empty_config.json").string()); }),
                 "empty_config.json: no \"chat_template\" in this tokenizer config"));
  dir.write("no_default.json",
            Json{{"chat_template", Json::array({{{"name", "rag"}, {"template", "x"}}})}}.dump());
  CHECK(contains(error_of<dst::ConfigError>(
                     [&] { dst::ChatTemplate::load((dir.path / "no_default.json").string()); }),
                 "no \"default\" template (it has: rag)"));
  dir.write("bad.jinja", "ok\n{% for m in messages %}");
  CHECK(contains(error_of<dst::ConfigError>(
                     [&] { dst::ChatTemplate::load((dir.path / "bad.jinja").string()); }),
                 "bad.jinja:2:24: chat template syntax error"));
  dir.write("drops.jinja",
            "{% for m in messages if m.role != 'assistant' %}{{ m.content }}{% endfor %}");
  CHECK(contains(
      error_of<dst::DataError>([&] {
        dst::ChatTemplate::load((dir.path / "drops.jinja").string()).render(messages, "f.jsonl:3");
      }),
      "f.jsonl:3: messages[2] (assistant) does not appear in the text"));
}

TEST_CASE("built-in chat templates are unchanged through ChatTemplate", "[data][jinja]") {
  const auto messages = chat({{"user", "Hi"}, {"assistant", "Hello"}});
  for (const std::string& name : dst::chat_template_names()) {
    const dst::ChatTemplate t = dst::ChatTemplate::load(name);
    CHECK(t.builtin());
    CHECK(t.sha256().empty());
    const dst::RenderedChat a = t.render(messages, "r");
    const dst::RenderedChat b = dst::render_chat(name, messages, "r");
    CHECK(a.text == b.text);
    CHECK(a.trained == b.trained);
  }
}

#include "deepseek_train/data/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/jinja_value.h"
#include "data/utf8.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/core/sha256.h"
#include "deepseek_train/data/jinja_template.h"

namespace dst {

namespace {

// Appends pieces to the rendered text, remembering which ones train.
struct Renderer {
  RenderedChat chat;
  void add(const std::string& piece, bool trained = false) {
    if (trained && !piece.empty())
      chat.trained.emplace_back(chat.text.size(), chat.text.size() + piece.size());
    chat.text += piece;
  }
};

void check_role(const ChatMessage& m, const std::string& where, size_t index) {
  DST_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant", DataError,
            where << ": messages[" << index << "].role '" << m.role
                  << "' is not system, user or assistant");
}

RenderedChat render_chatml(const std::vector<ChatMessage>& messages) {
  Renderer r;
  for (const ChatMessage& m : messages) {
    r.add("<|im_start|>" + m.role + "\n");
    r.add(m.content + "<|im_end|>", m.role == "assistant");
    r.add("\n");
  }
  return r.chat;
}

RenderedChat render_llama3(const std::vector<ChatMessage>& messages) {
  Renderer r;
  r.add("<|begin_of_text|>");
  for (const ChatMessage& m : messages) {
    r.add("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n");
    r.add(m.content + "<|eot_id|>", m.role == "assistant");
  }
  return r.chat;
}

RenderedChat render_deepseek(const std::vector<ChatMessage>& messages) {
  Renderer r;
  r.add(
      "<\xEF\xBD\x9C"
      "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      r.add(m.content + "\n\n");
    } else if (m.role == "user") {
      r.add("User: " + m.content + "\n\n");
    } else {
      r.add("Assistant: ");
      r.add(m.content +
                "<\xEF\xBD\x9C"
                "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
            true);
    }
  }
  return r.chat;
}

// ----- Jinja templates -----

namespace fs = std::filesystem;
using OrderedJson = nlohmann::ordered_json;
using Ranges = std::vector<std::pair<size_t, size_t>>;

const char* const kSpecialTokens[] = {"bos_token", "eos_token", "unk_token", "pad_token",
                                      "sep_token", "cls_token", "mask_token"};

// A template's text, the name errors give it, and the special tokens it renders with.
struct TemplateSource {
  std::string text;
  std::string name;
  OrderedJson tokens = OrderedJson::object();
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  DST_CHECK(in, ConfigError, path.string() << ": cannot read the chat template");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

OrderedJson read_config(const fs::path& path) {
  try {
    return OrderedJson::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    DST_THROW(ConfigError, path.string() << ": not valid JSON (" << one_line(e.what()) << ")");
  }
}

// The special tokens of a tokenizer_config.json: strings, or added-token objects {"content"}.
OrderedJson special_tokens(const OrderedJson& config, const fs::path& path) {
  OrderedJson tokens = OrderedJson::object();
  for (const char* key : kSpecialTokens) {
    if (!config.contains(key) || config[key].is_null()) continue;
    const OrderedJson& token = config[key];
    const bool object = token.is_object() && token.contains("content");
    DST_CHECK(token.is_string() || (object && token["content"].is_string()), ConfigError,
              path.string() << ": " << key << " must be a string or {\"content\": string}");
    tokens[key] = object ? token["content"] : token;
  }
  return tokens;
}

// tokenizer_config.json's "chat_template": a string, or the "default" of [{name, template}].
TemplateSource from_config(const fs::path& path) {
  const OrderedJson config = read_config(path);
  DST_CHECK(config.is_object() && config.contains("chat_template"), ConfigError,
            path.string() << ": no \"chat_template\" in this tokenizer config");
  const OrderedJson& value = config["chat_template"];
  TemplateSource source{"", path.string() + "[chat_template]", special_tokens(config, path)};
  if (value.is_string()) {
    source.text = value.get<std::string>();
    return source;
  }
  std::string names;
  for (const OrderedJson& entry : value.is_array() ? value : OrderedJson::array()) {
    const bool named = entry.is_object() && entry.value("name", OrderedJson()).is_string() &&
                       entry.value("template", OrderedJson()).is_string();
    DST_CHECK(named, ConfigError,
              path.string() << ": chat_template must be a string or a list of {name, template}");
    if (entry["name"] == "default") {
      source.text = entry["template"].get<std::string>();
      source.name = path.string() + "[chat_template default]";
      return source;
    }
    names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
  }
  DST_THROW(ConfigError, path.string() << ": chat_template has no \"default\" template (it has: "
                                       << (names.empty() ? "none" : names) << ")");
}

// A .jinja file; the special tokens of a tokenizer_config.json beside it, if there is one.
TemplateSource from_jinja(const fs::path& path) {
  TemplateSource source{read_file(path), path.string()};
  DST_CHECK(detail::is_valid_utf8(source.text), ConfigError,
            path.string() << ": the chat template is not valid UTF-8");
  const fs::path config = path.parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (fs::is_regular_file(config, ec)) source.tokens = special_tokens(read_config(config), config);
  return source;
}

TemplateSource find_template(const std::string& spec) {
  const fs::path path(spec);
  std::error_code ec;
  DST_CHECK(fs::exists(path, ec), ConfigError,
            spec << ": no such chat template file (nor a built-in: chatml, deepseek, llama3)");
  if (fs::is_directory(path, ec)) {
    if (fs::is_regular_file(path / "chat_template.jinja", ec))
      return from_jinja(path / "chat_template.jinja");
    DST_CHECK(fs::is_regular_file(path / "tokenizer_config.json", ec), ConfigError,
              spec << ": neither chat_template.jinja nor tokenizer_config.json in this folder");
    return from_config(path / "tokenizer_config.json");
  }
  return path.extension() == ".json" ? from_config(path) : from_jinja(path);
}

std::string stripped(const std::string& text) {
  return jinja::strip(jinja::Value(jinja::Json(text)), nullptr, true, true).str();
}

// `end`, moved past the whitespace and the eos token that directly follow it, if they do.
size_t through_eos(const std::string& text, size_t end, const std::string& eos) {
  if (eos.empty()) return end;
  size_t at = end;
  while (at < text.size() && jinja::is_space(detail::code_point_at(text, at)))
    at += detail::utf8_char_length(detail::byte_at(text, at));
  return text.compare(at, eos.size(), eos) == 0 ? at + eos.size() : end;
}

// Without generation blocks: each assistant turn's traced content (or, untraced, its stripped
// content searched after the previous turn), extended through the eos token.
Ranges assistant_ranges(const JinjaTemplate::Output& out, const std::vector<ChatMessage>& messages,
                        const std::string& eos, const std::string& where, const std::string& name) {
  Ranges ranges;
  size_t cursor = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    bool traced = false;
    for (const JinjaTemplate::Traced& t : out.assistant_content) {
      if (t.message != static_cast<int>(i)) continue;
      ranges.emplace_back(t.begin, through_eos(out.text, t.end, eos));
      cursor = std::max(cursor, ranges.back().second);
      traced = true;
    }
    // An identical earlier message was traced in its place (the interpreter cannot tell them
    // apart).
    for (size_t j = 0; j < i && !traced; ++j)
      traced = messages[j].role == "assistant" && messages[j].content == messages[i].content;
    if (traced) continue;
    const std::string content = stripped(messages[i].content);
    const size_t at = out.text.find(content, cursor);
    DST_CHECK(at != std::string::npos, DataError,
              where << ": messages[" << i << "] (assistant) does not appear in the text the chat "
                    << "template " << name
                    << " renders; mark what to train with {% generation %} in the template");
    ranges.emplace_back(at, through_eos(out.text, at + content.size(), eos));
    cursor = ranges.back().second;
  }
  return ranges;
}

// Sorted, non-empty, overlapping ranges merged.
Ranges normalized(Ranges ranges) {
  ranges.erase(std::remove_if(ranges.begin(), ranges.end(),
                              [](const auto& r) { return r.first >= r.second; }),
               ranges.end());
  std::sort(ranges.begin(), ranges.end());
  Ranges out;
  for (const auto& r : ranges) {
    if (!out.empty() && r.first <= out.back().second)
      out.back().second = std::max(out.back().second, r.second);
    else
      out.push_back(r);
  }
  return out;
}

}  // namespace

ChatTemplate ChatTemplate::load(const std::string& spec) {
  ChatTemplate t;
  t.spec_ = spec;
  const auto& names = chat_template_names();
  if (std::find(names.begin(), names.end(), spec) != names.end()) {
    t.fingerprint_ = spec;
    return t;
  }
  DST_CHECK(!spec.empty(), ConfigError, "chat template: empty name");
  const TemplateSource source = find_template(spec);
  t.jinja_ = std::make_shared<const JinjaTemplate>(source.text, source.name);
  t.special_tokens_ = source.tokens;
  t.sha256_ = sha256_hex(source.text);
  t.fingerprint_ = sha256_hex(source.text + "\n" + source.tokens.dump());
  return t;
}

RenderedChat ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                  const std::string& where) const {
  if (builtin()) return render_chat(spec_, messages, where);
  OrderedJson context = OrderedJson::object();
  context["messages"] = OrderedJson::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    check_role(messages[i], where, i);
    context["messages"].push_back({{"role", messages[i].role}, {"content", messages[i].content}});
  }
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = false;
  for (const auto& [key, token] : special_tokens_.items()) context[key] = token;
  const JinjaTemplate::Output out = jinja_->render(context, where);
  const std::string eos = special_tokens_.value("eos_token", std::string());
  RenderedChat chat{out.text, {}};
  chat.trained = normalized(jinja_->has_generation()
                                ? out.generation
                                : assistant_ranges(out, messages, eos, where, jinja_->name()));
  return chat;
}

std::vector<ChatMessage> parse_chat_messages(const std::string& messages_json,
                                             const std::string& where) {
  nlohmann::json array;
  try {
    array = nlohmann::json::parse(messages_json);
  } catch (const nlohmann::json::exception& e) {
    DST_THROW(DataError, where << ": messages: malformed JSON (" << e.what() << ")");
  }
  DST_CHECK(array.is_array(), DataError, where << ": messages must be a list of {role, content}");
  std::vector<ChatMessage> messages;
  bool answered = false;
  for (size_t i = 0; i < array.size(); ++i) {
    const nlohmann::json& m = array[i];
    for (const char* key : {"role", "content"})
      DST_CHECK(m.is_object() && m.contains(key) && m[key].is_string(), DataError,
                where << ": messages[" << i << "]." << key << " must be a string");
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    check_role(messages.back(), where, i);
    answered = answered || messages.back().role == "assistant";
  }
  DST_CHECK(answered, DataError, where << ": messages has no assistant turn to train on");
  return messages;
}

const std::vector<std::string>& chat_template_names() {
  static const std::vector<std::string> names = {"chatml", "deepseek", "llama3"};
  return names;
}

RenderedChat render_chat(const std::string& name, const std::vector<ChatMessage>& messages,
                         const std::string& where) {
  for (size_t i = 0; i < messages.size(); ++i) check_role(messages[i], where, i);
  if (name == "chatml") return render_chatml(messages);
  if (name == "llama3") return render_llama3(messages);
  if (name == "deepseek") return render_deepseek(messages);
  DST_THROW(ConfigError, "chat template '" << name << "' is not one of chatml, deepseek, llama3");
}

std::vector<uint8_t> chat_token_mask(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                                     const RenderedChat& chat) {
  std::vector<uint8_t> mask(ids.size(), 0);
  size_t begin = 0, range = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const size_t end = begin + tokenizer.token_bytes(ids[i]).size();
    while (range < chat.trained.size() && chat.trained[range].second <= begin) ++range;
    if (range < chat.trained.size() && chat.trained[range].first < end) mask[i] = 1;
    begin = end;
  }
  DST_CHECK(begin == chat.text.size(), DataError,
            "chat masks: the tokens of " << tokenizer.describe() << " cover " << begin
                                         << " bytes of a " << chat.text.size()
                                         << "-byte text (a normalising tokenizer?)");
  return mask;
}

}  // namespace dst

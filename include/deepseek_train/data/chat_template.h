// Chat records (`messages: [{role, content}]`) rendered with a chat template — a named built-in
// (chatml, llama3, deepseek) or a model's own Jinja template (data/jinja_template.h) — into one
// text plus the byte ranges the loss trains on (each assistant turn's content and its end
// marker), and the per-token mask of that text's tokens. The text is tokenized whole, as
// transformers' apply_chat_template does. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "deepseek_train/data/tokenizer.h"

namespace dst {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct RenderedChat {
  std::string text;
  std::vector<std::pair<size_t, size_t>> trained;  // byte ranges [begin, end) of `text`
};

// The messages of a JSON array text `[{"role": ..., "content": ...}, ...]`. DataError naming
// `where` and the key for anything else (not an array, a missing or non-string role/content, an
// unknown role, no assistant turn).
std::vector<ChatMessage> parse_chat_messages(const std::string& messages_json,
                                             const std::string& where);

// The names of the built-in templates render_chat knows.
const std::vector<std::string>& chat_template_names();

// Renders `messages` with the template `name`:
//   chatml:   <|im_start|>{role}\n{content}<|im_end|>\n ...
//   llama3:   <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>...
//   deepseek: <｜begin▁of▁sentence｜>{system}\n\nUser: {user}\n\nAssistant:
//   {assistant}<｜end▁of▁sentence｜>...
// (DeepSeek LLM chat). ConfigError for an unknown template; DataError naming `where` for an
// unknown role.
RenderedChat render_chat(const std::string& name, const std::vector<ChatMessage>& messages,
                         const std::string& where);

class JinjaTemplate;

// A chat template: a built-in format, or a model's Jinja template with its special tokens.
//
// A Jinja template renders with the variables transformers passes: `messages`, `tools` and
// `documents` (none), `add_generation_prompt` (false) and the special tokens bos_token,
// eos_token, unk_token, pad_token, sep_token, cls_token, mask_token that tokenizer_config.json
// sets (a string or {"content": ...}). Trained ranges:
//   - the template has {% generation %} blocks: exactly their output, as transformers'
//     return_assistant_tokens_mask;
//   - otherwise each assistant message's content where it reaches the output (followed by the
//     interpreter from the message's `content` through +, ~, trim/strip, set and namespaces;
//     where the template rewrites it some other way, its stripped content is searched in the
//     text after the previous assistant turn), extended over the whitespace and the eos_token
//     that directly follow it. An end-of-turn marker that is not the eos_token is not trained
//     then: mark such templates with {% generation %}. An assistant turn found nowhere is a
//     DataError.
class ChatTemplate {
 public:
  // `spec`: chatml | deepseek | llama3, or a path: a tokenizer_config.json (its "chat_template",
  // a string or a list of {name, template} of which "default" is used, and its special tokens),
  // a .jinja file (special tokens from a tokenizer_config.json beside it, if any), or a model
  // folder (its chat_template.jinja, else its tokenizer_config.json); a .json file is read as
  // a tokenizer config, any other file as Jinja, and a built-in name wins over a file of that
  // name (write ./chatml). One-line ConfigError naming the file for a missing or unreadable
  // file, no chat_template, or a syntax error.
  static ChatTemplate load(const std::string& spec);

  // Renders `messages`: a built-in as render_chat does, a Jinja template as described above.
  // DataError naming `where` for an error in the template, its raise_exception(), or an
  // assistant turn not found in the text.
  RenderedChat render(const std::vector<ChatMessage>& messages, const std::string& where) const;

  bool builtin() const { return jinja_ == nullptr; }
  // The built-in name or the spec the template was loaded from.
  const std::string& spec() const { return spec_; }
  // SHA-256 (hex) of the Jinja template text; empty for a built-in.
  const std::string& sha256() const { return sha256_; }
  // Identifies the rendering: the built-in name, or a SHA-256 of the template and its special
  // tokens (prepared shards are re-made when it changes).
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  std::string spec_;
  std::string sha256_;
  std::string fingerprint_;
  std::shared_ptr<const JinjaTemplate> jinja_;
  nlohmann::ordered_json special_tokens_;  // {"bos_token": "<s>", ...}
};

// 1 for each token of `ids` (the tokens of chat.text) that overlaps a trained range, else 0.
// DataError when the tokens' bytes do not add up to the text (a tokenizer that normalises).
std::vector<uint8_t> chat_token_mask(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                                     const RenderedChat& chat);

}  // namespace dst

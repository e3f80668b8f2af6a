// Chat records (`messages: [{role, content}]`) rendered with a named built-in chat template
// (chatml, llama3, deepseek) into one text plus the byte ranges the loss trains on (each
// assistant turn's content and its end marker), and the per-token mask of that text's tokens.
// The text is tokenized whole, as transformers' apply_chat_template does. Torch-free.
#pragma once

#include <cstdint>
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

// The names render_chat knows.
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

// 1 for each token of `ids` (the tokens of chat.text) that overlaps a trained range, else 0.
// DataError when the tokens' bytes do not add up to the text (a tokenizer that normalises).
std::vector<uint8_t> chat_token_mask(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                                     const RenderedChat& chat);

}  // namespace dst

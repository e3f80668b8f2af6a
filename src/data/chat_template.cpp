#include "deepseek_train/data/chat_template.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "deepseek_train/core/error.h"

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

}  // namespace

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

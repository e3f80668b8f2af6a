// Byte-level tokenizer: one id per UTF-8 byte, special tokens above 255.
#include "deepseek_train/data/byte_tokenizer.h"

#include "deepseek_train/core/error.h"

namespace dst {

std::vector<int32_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  return ids;
}

namespace {
const char* const kSpecialTexts[] = {"<|bos|>", "<|eos|>", "<|pad|>"};
}  // namespace

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    DST_CHECK(id >= 0 && id < kVocabSize, DataError,
              "byte tokenizer: token id " << id << " at position " << i
                                          << " is outside the vocabulary [0, " << kVocabSize
                                          << ")");
    if (id < 256) {
      text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    } else if (!skip_special) {
      text += kSpecialTexts[id - 256];
    }
  }
  return text;
}

std::optional<int32_t> ByteTokenizer::token_to_id(const std::string& token) const {
  if (token.size() == 1) return static_cast<int32_t>(static_cast<unsigned char>(token[0]));
  for (int32_t i = 0; i < 3; ++i) {
    if (token == kSpecialTexts[i]) return 256 + i;
  }
  return std::nullopt;
}

}  // namespace dst

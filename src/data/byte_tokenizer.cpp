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

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    DST_CHECK(id >= 0 && id < kVocabSize, DataError,
              "byte tokenizer: token id " << id << " at position " << i
                                          << " is outside the vocabulary [0, " << kVocabSize
                                          << ")");
    if (id < 256) text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
  }
  return text;
}

}  // namespace dst

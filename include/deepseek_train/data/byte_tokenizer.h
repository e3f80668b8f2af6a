// Byte-level tokenizer: ids 0..255 are the bytes of UTF-8 text, followed by special tokens.
// Used for the synthetic quickstart corpus; the Hugging Face BPE tokenizer is a separate module.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dst {

class ByteTokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int32_t kPad = 258;
  static constexpr int32_t kVocabSize = 259;

  int32_t vocab_size() const { return kVocabSize; }
  int32_t eos_id() const { return kEos; }
  int32_t bos_id() const { return kBos; }
  int32_t pad_id() const { return kPad; }

  // One id per byte; never fails.
  std::vector<int32_t> encode(const std::string& text) const;
  // Bytes for ids < 256; special tokens are dropped. Throws DataError for ids outside the vocab.
  std::string decode(const std::vector<int32_t>& ids) const;
};

}  // namespace dst

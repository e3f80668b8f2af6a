// Byte-level tokenizer: ids 0..255 are the bytes of UTF-8 text, followed by special tokens.
// Used for the synthetic quickstart corpus; Hugging Face tokenizer.json files load as
// BpeTokenizer (bpe_tokenizer.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "deepseek_train/data/tokenizer.h"

namespace dst {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int32_t kPad = 258;
  static constexpr int32_t kVocabSize = 259;

  int32_t vocab_size() const override { return kVocabSize; }
  int32_t eos_id() const override { return kEos; }
  int32_t bos_id() const { return kBos; }
  int32_t pad_id() const { return kPad; }

  // One id per byte; never fails.
  std::vector<int32_t> encode(const std::string& text) const override;
  // Bytes for ids < 256; special tokens become "<|bos|>", "<|eos|>", "<|pad|>" unless
  // skip_special. Throws DataError for ids outside the vocab.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  std::optional<int32_t> token_to_id(const std::string& token) const override;
  std::string token_bytes(int32_t id) const override {
    return id >= 0 && id < 256 ? std::string(1, static_cast<char>(id)) : std::string();
  }
  std::string fingerprint() const override { return "byte-259-v1"; }
  std::string describe() const override { return "byte (259 ids)"; }
};

}  // namespace dst

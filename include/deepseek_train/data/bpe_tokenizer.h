// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (GPT-2, DeepSeek, LLaMA-3
// style), producing the same ids as the Rust `tokenizers` crate's
// `encode(text, add_special_tokens=False)`. Used by the data pipeline when a recipe's
// `data.tokenizer` is the path of a tokenizer.json (see load_tokenizer in tokenizer.h).
//
// Supported: model BPE (merges as "a b" strings or ["a", "b"] pairs, ignore_merges, unk_token),
// normalizer null, pre_tokenizer ByteLevel / Split / Digits / Sequence of them, added tokens
// (single_word, lstrip, rstrip, normalized, special), decoder ByteLevel or null. Anything else
// is rejected with a DataError naming the file; post_processor, truncation and padding are
// ignored (no special token is added, nothing is cut). encode() is safe to call from several
// threads at once; invalid UTF-8 in its input is replaced by U+FFFD first (as Rust's
// String::from_utf8_lossy would), and decode() does the same to its output, as Hugging Face does.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "deepseek_train/data/tokenizer.h"

namespace dst {

class BpeTokenizer final : public Tokenizer {
 public:
  // Loads `path`. `eos_token`, when not empty, names the end-of-document token (it must exist);
  // otherwise the first known one of <|endoftext|>, <｜end▁of▁sentence｜>, </s>,
  // <|end_of_text|>, <eos> is used. Throws DataError naming the file on any problem.
  explicit BpeTokenizer(const std::string& path, const std::string& eos_token = "");
  // Same, from the JSON text itself; `name` stands for the file in messages and describe().
  static std::unique_ptr<BpeTokenizer> from_json_text(const std::string& json_text,
                                                      const std::string& name,
                                                      const std::string& eos_token = "");
  ~BpeTokenizer() override;
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t vocab_size() const override;
  int32_t eos_id() const override;
  std::optional<int32_t> token_to_id(const std::string& token) const override;
  std::string token_bytes(int32_t id) const override;
  // SHA-256 (hex) of the tokenizer.json bytes.
  std::string fingerprint() const override;
  // "bpe:<path> (<n> ids)".
  std::string describe() const override;

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dst

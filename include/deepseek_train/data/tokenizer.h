// The tokenizer interface the data pipeline, `dstrain prepare/tokenize/eval` and training use,
// and the factory that builds one from a recipe's `data.tokenizer` value ("byte" or the path of a
// Hugging Face tokenizer.json). Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dst {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of `text` without any special token added (Hugging Face
  // `encode(text, add_special_tokens=False)`). Added tokens of a tokenizer.json written in the
  // text are recognised; the byte tokenizer has none (its specials exist only as ids).
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // Text of `ids` (special tokens included as their text unless skip_special). Throws DataError
  // for an id outside the vocabulary.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
  // The bytes of the input text token `id` stands for (an added token: its content; a special
  // id of the byte tokenizer: nothing), so that a text's token boundaries can be located.
  virtual std::string token_bytes(int32_t id) const = 0;
  // Number of ids (vocabulary + added tokens): the model's vocab_size must be at least this.
  virtual int32_t vocab_size() const = 0;
  // End-of-document id used when packing documents; -1 when the tokenizer has none.
  virtual int32_t eos_id() const = 0;
  // Id of a token given by its text (special tokens included); nullopt when unknown.
  virtual std::optional<int32_t> token_to_id(const std::string& token) const = 0;
  // Hex digest identifying the vocabulary and rules (stored with prepared corpora so a corpus is
  // never read with another tokenizer).
  virtual std::string fingerprint() const = 0;
  // Short description for logs ("byte", "bpe:<file> (50257 tokens)").
  virtual std::string describe() const = 0;
};

// "byte" -> ByteTokenizer; anything else is the path of a tokenizer.json (BpeTokenizer).
// `eos_token` (optional) names the end-of-document token for tokenizers whose file does not say
// which it is. Throws DataError naming the file on any problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec,
                                          const std::string& eos_token = "");

}  // namespace dst

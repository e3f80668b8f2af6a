// load_tokenizer: "byte" or the path of a Hugging Face tokenizer.json.
#include "deepseek_train/data/tokenizer.h"

#include "deepseek_train/core/error.h"
#include "deepseek_train/data/bpe_tokenizer.h"
#include "deepseek_train/data/byte_tokenizer.h"

namespace dst {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec, const std::string& eos_token) {
  DST_CHECK(!spec.empty(), DataError,
            "tokenizer: the spec is empty (expected \"byte\" or the path of a tokenizer.json)");
  if (spec == "byte") {
    DST_CHECK(eos_token.empty() || eos_token == "<|eos|>", DataError,
              "tokenizer 'byte': eos_token '"
                  << eos_token << "' is not one of its tokens (its end of document is <|eos|>)");
    return std::make_unique<ByteTokenizer>();
  }
  return std::make_unique<BpeTokenizer>(spec, eos_token);
}

}  // namespace dst

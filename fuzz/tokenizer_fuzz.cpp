// Fuzzes dst::BpeTokenizer::from_json_text. Input: tokenizer.json text, optionally followed by a
// NUL and a short text to encode (else a fixed sample is used). After a successful load the
// text is encoded, the ids decoded (with and without special tokens), and a few arbitrary ids
// decoded (ids outside the vocabulary must be a DataError).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "deepseek_train/data/bpe_tokenizer.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string json = input.substr(0, nul);
  const std::string text = nul == std::string::npos
                               ? std::string("Hello, world! 12345 <|endoftext|> caf\xc3\xa9\n  x")
                               : input.substr(nul + 1, 256);

  std::unique_ptr<dst::BpeTokenizer> tokenizer;
  if (!dst_fuzz::expect_only_dst_errors(
          [&] { tokenizer = dst::BpeTokenizer::from_json_text(json, "fuzz-tokenizer.json"); }))
    return 0;

  const int32_t vocab_size = tokenizer->vocab_size();
  dst_fuzz::check(vocab_size >= 0, "negative vocab_size");
  const int32_t eos = tokenizer->eos_id();
  dst_fuzz::check(eos >= -1 && eos < vocab_size, "eos_id outside the vocabulary");
  (void)tokenizer->describe();
  (void)tokenizer->token_to_id(text);

  std::vector<int32_t> ids;
  if (dst_fuzz::expect_only_dst_errors([&] { ids = tokenizer->encode(text); })) {
    for (const int32_t id : ids)
      dst_fuzz::check(id >= 0 && id < vocab_size, "encode returned id " + std::to_string(id));
    dst_fuzz::expect_only_dst_errors([&] { (void)tokenizer->decode(ids); });
    dst_fuzz::expect_only_dst_errors([&] { (void)tokenizer->decode(ids, true); });
  }
  // Arbitrary ids, some outside [0, vocab_size).
  std::vector<int32_t> arbitrary = {0, vocab_size - 1, vocab_size, -1};
  for (size_t i = 0; i < text.size() && i < 16; ++i)
    arbitrary.push_back(static_cast<int32_t>(static_cast<unsigned char>(text[i])) - 2);
  for (const int32_t id : arbitrary)
    dst_fuzz::expect_only_dst_errors([&] { (void)tokenizer->decode({id}); });
  return 0;
}

// Fuzzes dst::parse_recipe. Input: YAML text, then optional NUL-separated "a.b=value" overrides
// (at most 4). A recipe that parses must survive recipe_to_yaml -> parse_recipe, unchanged when
// the input is printable UTF-8.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "deepseek_train/recipe/recipe.h"
#include "fuzz_common.h"

namespace {

// Well-formed UTF-8 (Unicode 3.9 table 3-7: no overlongs, surrogates or code points > U+10FFFF)
// without the characters yaml-cpp's emitter escapes (C0 controls but tab and newlines, DEL, C1
// controls, U+2028/U+2029, U+FEFF).
bool is_printable_utf8(const std::string& text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    const unsigned char lead = byte(i);
    size_t length = 1;
    unsigned char low = 0x80, high = 0xBF;
    uint32_t code_point = lead;
    if (lead < 0x80) {
      if ((lead < 0x20 && lead != '\t' && lead != '\n' && lead != '\r') || lead == 0x7F)
        return false;
      ++i;
      continue;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
      code_point = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      code_point = lead & 0x0F;
      if (lead == 0xE0) low = 0xA0;
      if (lead == 0xED) high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      code_point = lead & 0x07;
      if (lead == 0xF0) low = 0x90;
      if (lead == 0xF4) high = 0x8F;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const unsigned char c = byte(i + k);
      if (c < (k == 1 ? low : 0x80) || c > (k == 1 ? high : 0xBF)) return false;
      code_point = (code_point << 6) | (c & 0x3F);
    }
    if ((code_point >= 0x80 && code_point <= 0x9F) || code_point == 0x2028 ||
        code_point == 0x2029 || code_point == 0xFEFF)
      return false;
    i += length;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  size_t nul = input.find('\0');
  const std::string yaml = input.substr(0, nul);
  std::vector<std::string> overrides;
  while (nul != std::string::npos && overrides.size() < 4) {
    const size_t next = input.find('\0', nul + 1);
    overrides.push_back(input.substr(nul + 1, next == std::string::npos ? next : next - nul - 1));
    nul = next;
  }

  dst::TrainConfig config;
  // No directory in the source name: a relative model.hf_config resolves against the working
  // directory (scripts/fuzz.sh runs the targets in a scratch directory).
  if (!dst_fuzz::expect_only_dst_errors(
          [&] { config = dst::parse_recipe(yaml, "fuzz-recipe.yaml", overrides); }))
    return 0;

  // The resolved recipe is YAML that parse_recipe accepts, and it is a fixed point. Exact only for
  // printable UTF-8: yaml-cpp's emitter replaces invalid UTF-8 in strings it quotes with U+FFFD,
  // and escapes control characters, which can push a key past YAML's 1024-character limit for
  // implicit keys (fuzz/regressions/recipe/roundtrip_*); other inputs only must not crash.
  std::string emitted;
  dst_fuzz::expect_only_dst_errors([&] { emitted = dst::recipe_to_yaml(config); });
  bool printable = is_printable_utf8(yaml);
  for (const std::string& text : overrides) printable = printable && is_printable_utf8(text);
  if (!printable) {
    dst_fuzz::expect_only_dst_errors(
        [&] { (void)dst::parse_recipe(emitted, "fuzz-roundtrip.yaml"); });
    return 0;
  }
  dst::TrainConfig again;
  try {
    again = dst::parse_recipe(emitted, "fuzz-roundtrip.yaml");
  } catch (const std::exception& e) {
    dst_fuzz::fail("recipe_to_yaml output does not parse back",
                   std::string(e.what()) + "\n--- emitted ---\n" + emitted);
  }
  const std::string emitted_again = dst::recipe_to_yaml(again);
  dst_fuzz::check(emitted_again == emitted,
                  "recipe_to_yaml is not a fixed point:\n--- first ---\n" + emitted +
                      "--- second ---\n" + emitted_again);
  return 0;
}

// Llama and DeepSeek-V2/V3 models as GGUF files for llama.cpp and ollama (`dstrain ckpt convert
// --to gguf`): llama.cpp's architectures `llama` (tensor names token_embd, blk.N.attn_q, ...; q/k
// rows reordered from Hugging Face's rotate-half layout to the interleaved pairs llama.cpp's RoPE
// expects) and `deepseek2` (src/checkpoint/gguf_deepseek2.h: MLA split into attn_k_b/attn_v_b,
// stacked experts; docs/design/deepseek2_gguf.md), the hyper-parameters as <arch>.* keys, and a
// Hugging Face byte-level BPE tokenizer.json as tokenizer.ggml.* keys. Weights in f32, f16, bf16
// or q8_0 (norms, and DeepSeek's router and its bias, stay f32).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>

#include "deepseek_train/model/model_config.h"

namespace dst {

struct GgufExportOptions {
  std::string dtype = "f16";   // f32 | f16 | bf16 | q8_0
  std::string name;            // general.name
  std::string tokenizer_json;  // "" : no tokenizer (llama.cpp then cannot tokenize text)
  std::string tokenizer_pre;   // llama.cpp's pre-tokenizer name; "" : recognised from the file
  std::optional<int32_t> bos_token_id;
  std::optional<int32_t> eos_token_id;  // required with a tokenizer (llama.cpp's fallback is wrong)
  std::string provenance_json;  // train/provenance.h: metadata deepseek_train.provenance ("": none)
};

// Writes `path` from the full tensors of a model (Hugging Face names). ConfigError naming the
// tensor, key or file when the family has no GGUF layout here, llama.cpp cannot hold the model
// (gguf_deepseek2::check_representable), a tensor has no llama.cpp name (merge adapters first),
// a q8_0 row is not a multiple of 32, or the tokenizer does not fit the model.
void export_gguf(const std::string& path, const ModelConfig& config,
                 const std::map<std::string, at::Tensor>& tensors,
                 const GgufExportOptions& options);

// The q/k projection rows of `weight` ([heads * head_dim, in]) reordered for llama.cpp: each
// head's rows (first half, second half) interleaved as pairs (exposed for tests).
at::Tensor interleave_rotary_rows(const at::Tensor& weight, int64_t heads);

// Q8_0 blocks of `values` (float, last dimension a multiple of 32): per 32 values an fp16 scale
// max|x| / 127 and 32 int8 round(x / scale).
std::string quantize_q8_0(const at::Tensor& values);

}  // namespace dst

#include "deepseek_train/checkpoint/gguf_export.h"

#include <ATen/ATen.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "deepseek_train/checkpoint/gguf_writer.h"
#include "deepseek_train/core/error.h"
#include "gguf_deepseek2.h"

namespace dst {

namespace {

using nlohmann::json;

// Hugging Face Llama names -> llama.cpp's.
std::string gguf_name(const std::string& name) {
  static const std::map<std::string, std::string> fixed = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"}};
  static const std::map<std::string, std::string> per_layer = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  if (auto it = fixed.find(name); it != fixed.end()) return it->second;
  static const std::regex layer("model\\.layers\\.([0-9]+)\\.(.+)");
  std::smatch match;
  if (std::regex_match(name, match, layer))
    if (auto it = per_layer.find(match[2].str()); it != per_layer.end())
      return "blk." + match[1].str() + "." + it->second;
  DST_THROW(ConfigError, "GGUF export: tensor '"
                             << name
                             << "' has no llama.cpp name (adapters must be merged first: "
                                "training exports <output_dir>/merged)");
}

std::string bytes_of(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

// The tensor encoded as `dtype`; 1-D tensors (norms) stay f32, as llama.cpp's converter keeps them.
std::pair<GgmlType, std::string> encode(const std::string& name, const at::Tensor& tensor,
                                        const std::string& dtype) {
  const at::Tensor values = tensor.to(at::kFloat).contiguous();
  if (values.dim() < 2 || dtype == "f32") return {GgmlType::F32, bytes_of(values)};
  if (dtype == "f16") return {GgmlType::F16, bytes_of(values.to(at::kHalf))};
  if (dtype == "bf16") return {GgmlType::BF16, bytes_of(values.to(at::kBFloat16))};
  DST_CHECK(values.size(-1) % 32 == 0, ConfigError,
            "GGUF export: q8_0 needs rows that are a multiple of 32 values; tensor '"
                << name << "' has rows of " << values.size(-1) << " (use --dtype f16)");
  return {GgmlType::Q8_0, quantize_q8_0(values)};
}

uint32_t file_type(const std::string& dtype) {
  if (dtype == "f32") return 0;
  if (dtype == "f16") return 1;
  if (dtype == "q8_0") return 7;
  return 32;  // bf16
}

void add_general(GgufWriter& gguf, const std::string& architecture, const GgufExportOptions& o) {
  gguf.add_string("general.architecture", architecture);
  gguf.add_string("general.name", o.name.empty() ? "model" : o.name);
  if (!o.provenance_json.empty()) gguf.add_string("deepseek_train.provenance", o.provenance_json);
  gguf.add_uint32("general.file_type", file_type(o.dtype));
  if (o.dtype == "q8_0") gguf.add_uint32("general.quantization_version", 2);
}

void add_llama_hyper_parameters(GgufWriter& gguf, const ModelConfig& c) {
  gguf.add_uint32("llama.context_length", static_cast<uint32_t>(c.max_position_embeddings));
  gguf.add_uint32("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
  gguf.add_uint32("llama.block_count", static_cast<uint32_t>(c.num_hidden_layers));
  gguf.add_uint32("llama.feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  gguf.add_uint32("llama.attention.head_count", static_cast<uint32_t>(c.num_attention_heads));
  gguf.add_uint32("llama.attention.head_count_kv", static_cast<uint32_t>(c.num_key_value_heads));
  gguf.add_uint32("llama.rope.dimension_count", static_cast<uint32_t>(c.head_dim()));
  gguf.add_float32("llama.rope.freq_base", static_cast<float>(c.rope_theta));
  gguf.add_float32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  gguf.add_uint32("llama.vocab_size", static_cast<uint32_t>(c.vocab_size));
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  DST_CHECK(in.good(), ConfigError, path << ": cannot open the tokenizer");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    DST_THROW(ConfigError, path << ": invalid JSON (" << e.what() << ")");
  }
}

// llama.cpp's name of the tokenizer's pre-tokenizer, recognised from its split patterns.
std::string recognise_pre_tokenizer(const json& tokenizer, const std::string& path) {
  const std::string pre = tokenizer.value("pre_tokenizer", json()).dump();
  if (pre.find("\\\\s?\\\\p{L}+") != std::string::npos) return "deepseek-coder";
  if (pre.find("\\\\s?[A-Za-z") != std::string::npos) return "deepseek-llm";
  const json pre_tokenizer = tokenizer.value("pre_tokenizer", json());
  if (pre_tokenizer.is_object() && pre_tokenizer.value("type", std::string()) == "ByteLevel")
    return "gpt-2";  // exactly GPT-2's byte-level split, nothing else
  DST_THROW(ConfigError, path << ": cannot tell which llama.cpp pre-tokenizer key "
                                 "'pre_tokenizer' corresponds to; name it with --gguf-pre");
}

void add_tokenizer(GgufWriter& gguf, const ModelConfig& c, const GgufExportOptions& o) {
  const std::string& path = o.tokenizer_json;
  const json tokenizer = read_json_file(path);
  const json model = tokenizer.value("model", json::object());
  DST_CHECK(model.value("type", std::string()) == "BPE", ConfigError,
            path << ": key 'model.type' must be BPE (a byte-level BPE tokenizer)");
  std::vector<std::string> tokens(c.vocab_size);
  std::vector<int32_t> types(c.vocab_size, 5);  // unused until a token claims the id
  auto place = [&](const std::string& token, int64_t id, int32_t type) {
    DST_CHECK(id >= 0 && id < c.vocab_size, ConfigError,
              path << ": token '" << token << "' has id " << id << ", outside the model's "
                   << "vocabulary of " << c.vocab_size);
    tokens[id] = token;
    types[id] = type;
  };
  const json vocab = model.value("vocab", json::object());  // bound: items() of a temporary dangles
  for (const auto& [token, id] : vocab.items()) place(token, id.get<int64_t>(), 1);
  const json added_tokens = tokenizer.value("added_tokens", json::array());
  for (const json& added : added_tokens)
    place(added.value("content", std::string()), added.value("id", int64_t{-1}),
          added.value("special", false) ? 3 : 4);
  for (int64_t id = 0; id < c.vocab_size; ++id)
    if (types[id] == 5) tokens[id] = "[PAD" + std::to_string(id) + "]";
  std::vector<std::string> merges;
  const json merge_list = model.value("merges", json::array());
  for (const json& merge : merge_list)
    merges.push_back(merge.is_string()
                         ? merge.get<std::string>()
                         : merge[0].get<std::string>() + " " + merge[1].get<std::string>());
  gguf.add_string("tokenizer.ggml.model", "gpt2");
  gguf.add_string("tokenizer.ggml.pre", o.tokenizer_pre.empty()
                                            ? recognise_pre_tokenizer(tokenizer, path)
                                            : o.tokenizer_pre);
  gguf.add_string_array("tokenizer.ggml.tokens", tokens);
  gguf.add_int32_array("tokenizer.ggml.token_type", types);
  gguf.add_string_array("tokenizer.ggml.merges", merges);
  // Without an EOS id llama.cpp assumes one of its own (11 for BPE vocabularies): the model's, or
  // the tokenizer's end-of-text token.
  const std::optional<int32_t> eos = o.eos_token_id;
  DST_CHECK(eos.has_value(), ConfigError,
            path << ": no end-of-sequence token (the model folder's config.json names no "
                    "eos_token_id and the tokenizer none it recognises)");
  gguf.add_uint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(*eos));
  if (o.bos_token_id) gguf.add_uint32("tokenizer.ggml.bos_token_id", *o.bos_token_id);
  // tokenizer_config.json beside tokenizer.json says whether prompts start with BOS.
  std::ifstream config_in(std::filesystem::path(path).parent_path() / "tokenizer_config.json");
  if (config_in.good()) {
    const json config = json::parse(config_in, nullptr, /*allow_exceptions=*/false);
    if (config.is_object() && config.contains("add_bos_token") &&
        config["add_bos_token"].is_boolean())
      gguf.add_bool("tokenizer.ggml.add_bos_token", config["add_bos_token"].get<bool>());
  }
}

}  // namespace

at::Tensor interleave_rotary_rows(const at::Tensor& weight, int64_t heads) {
  const int64_t rows = weight.size(0);
  return weight.reshape({heads, 2, rows / heads / 2, weight.size(1)})
      .transpose(1, 2)
      .reshape(weight.sizes());
}

std::string quantize_q8_0(const at::Tensor& values) {
  const at::Tensor flat = values.to(at::kFloat).contiguous().view({-1});
  const float* x = flat.data_ptr<float>();
  const int64_t blocks = flat.numel() / 32;
  std::string out(blocks * 34, '\0');
  for (int64_t b = 0; b < blocks; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    const float scale = amax / 127.0f;
    const float inverse = scale != 0 ? 1.0f / scale : 0.0f;
    const c10::Half half(scale);
    std::memcpy(&out[b * 34], &half.x, 2);
    for (int i = 0; i < 32; ++i)
      out[b * 34 + 2 + i] =
          static_cast<char>(static_cast<int8_t>(std::round(x[b * 32 + i] * inverse)));
  }
  return out;
}

void export_gguf(const std::string& path, const ModelConfig& config,
                 const std::map<std::string, at::Tensor>& tensors,
                 const GgufExportOptions& options) {
  DST_CHECK(config.model_type == "llama" || config.is_deepseek(), ConfigError,
            "GGUF export: model type '" << config.model_type
                                        << "' cannot be written (llama, deepseek_v2, deepseek_v3)");
  DST_CHECK(options.dtype == "f32" || options.dtype == "f16" || options.dtype == "bf16" ||
                options.dtype == "q8_0",
            ConfigError,
            "GGUF export: --dtype must be f32, f16, bf16 or q8_0, got '" << options.dtype << "'");
  GgufWriter gguf;
  if (config.is_deepseek()) {
    gguf_deepseek2::check_representable(config);
    add_general(gguf, "deepseek2", options);
    gguf_deepseek2::add_metadata(gguf, config);
    if (!options.tokenizer_json.empty()) add_tokenizer(gguf, config, options);
    for (const gguf_deepseek2::GgufTensor& t : gguf_deepseek2::tensors(config, tensors)) {
      // As llama.cpp's converter: rows q8_0 blocks cannot cover (MLA's attn_k_b rows are
      // qk_nope_head_dim long) fall back to f16.
      const bool q8_fits = t.values.size(-1) % 32 == 0;
      const std::string dtype = t.keep_f32                            ? "f32"
                                : options.dtype == "q8_0" && !q8_fits ? "f16"
                                                                      : options.dtype;
      auto [type, data] = encode(t.name, t.values, dtype);
      gguf.add_tensor(t.name, t.values.sizes().vec(), type, std::move(data));
    }
    gguf.write(path);
    return;
  }
  add_general(gguf, "llama", options);
  add_llama_hyper_parameters(gguf, config);
  if (!options.tokenizer_json.empty()) add_tokenizer(gguf, config, options);
  for (const auto& [name, tensor] : tensors) {
    at::Tensor values = tensor;
    if (name.find("self_attn.q_proj.weight") != std::string::npos)
      values = interleave_rotary_rows(values, config.num_attention_heads);
    if (name.find("self_attn.k_proj.weight") != std::string::npos)
      values = interleave_rotary_rows(values, config.num_key_value_heads);
    auto [type, data] = encode(name, values, options.dtype);
    gguf.add_tensor(gguf_name(name), values.sizes().vec(), type, std::move(data));
  }
  gguf.write(path);
}

}  // namespace dst

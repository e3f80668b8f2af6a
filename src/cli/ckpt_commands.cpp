// dstrain ckpt inspect | convert.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli_io.h"
#include "commands.h"
#include "deepseek_train/checkpoint/hf_interop.h"
#include "deepseek_train/checkpoint/sharded_checkpoint.h"
#include "deepseek_train/checkpoint/weights_file.h"
#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/tokenizer.h"
#include "inference_model.h"

namespace dst::cli {

namespace {

std::optional<EncryptionKey> key_of(const CkptArgs& args) {
  return load_encryption_key({args.key_file, args.key_env});
}

// The weights of a checkpoint directory or a Hugging Face folder, as full tensors.
struct ModelWeights {
  ModelConfig config;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  at::ScalarType dtype = at::kFloat;  // the parameters' dtype in training
  std::string description;            // "<dir> (step N)"
  std::string provenance;             // the checkpoint's (train/provenance.h); "" : none
};

ModelWeights read_model_weights(const CkptArgs& args) {
  ModelWeights weights;
  if (!std::filesystem::exists(std::filesystem::path(args.directory) / "manifest.json") &&
      std::filesystem::exists(std::filesystem::path(args.directory) / "config.json")) {
    const HfModelReader hf(args.directory);
    weights.config = hf.config();
    for (const std::string& name : hf.model_tensor_names())
      weights.tensors.emplace_back(name, hf.read_rows(name));
    weights.description = args.directory + " (Hugging Face)";
    // An export of ours carries its checkpoint's provenance along.
    const std::filesystem::path provenance =
        std::filesystem::path(args.directory) / "provenance.json";
    if (std::filesystem::exists(provenance)) {
      std::ifstream in(provenance);
      try {
        weights.provenance = nlohmann::json::parse(in).dump();
      } catch (const nlohmann::json::exception& e) {
        DST_THROW(DataError, provenance.string() << ": not JSON (" << e.what() << ")");
      }
    }
    return weights;
  }
  CheckpointReader reader(args.directory, key_of(args));
  weights.config = reader.info().model;
  for (const std::string& name : reader.tensor_names())
    if (reader.has(name, "master"))
      weights.tensors.emplace_back(name, reader.read_full(name, "master"));
  weights.dtype = checkpoint_dtype_from_name(reader.info().param_dtype).value_or(at::kFloat);
  weights.description = args.directory + " (step " + std::to_string(reader.info().step) + ")";
  weights.provenance = reader.info().provenance;
  return weights;
}

// bos_token_id / eos_token_id of a Hugging Face folder (the first id of a list: GGUF holds one).
void read_special_ids(const std::string& directory, GgufExportOptions& options) {
  const std::vector<int32_t> bos = hf_token_ids(directory, "bos_token_id");
  const std::vector<int32_t> eos = hf_token_ids(directory, "eos_token_id");
  if (!options.bos_token_id && !bos.empty()) options.bos_token_id = bos.front();
  if (!options.eos_token_id && !eos.empty()) options.eos_token_id = eos.front();
}

}  // namespace

int run_ckpt_inspect(const CkptArgs& args) {
  CheckpointReader reader(args.directory, key_of(args));
  std::cout << reader.describe();
  int bad = 0;
  for (const auto& file : reader.verify_files()) {
    std::cout << "  " << file.name << " " << file.bytes
              << " bytes: " << (file.checksum_ok ? "sha256 ok" : file.error) << "\n";
    bad += file.checksum_ok ? 0 : 1;
  }
  DST_CHECK(bad == 0, CheckpointError,
            args.directory << ": " << bad << " file(s) failed verification");
  return 0;
}

int run_ckpt_convert(const CkptArgs& given) {
  DST_CHECK(given.to == "consolidated" || given.to == "hf" || given.to == "gguf", ConfigError,
            "ckpt convert: --to must be consolidated, hf or gguf, got '" << given.to << "'");
  // A bad output key fails before anything is read or written.
  const std::optional<EncryptionKey> output_key = load_encryption_key({given.encrypt_key_file, ""});
  CkptArgs args = given;
  const DecryptedSources decrypted({&args.directory}, args.key_file, args.key_env, "ckpt convert");
  ModelWeights weights = read_model_weights(args);
  if (args.directory != given.directory)
    weights.description = given.directory + " (Hugging Face, encrypted)";
  // Where the files are written: the output, or (--encrypt-key-file) a private staging folder
  // they are sealed from, so no plaintext reaches the output's disk.
  const std::unique_ptr<ExportStaging> staging =
      output_key ? std::make_unique<ExportStaging>() : nullptr;
  const std::filesystem::path output(args.output);
  const std::string written =
      !staging            ? args.output
      : args.to == "gguf" ? (std::filesystem::path(staging->path()) / output.filename()).string()
                          : staging->path();
  if (args.to == "hf") {
    DST_CHECK(args.max_shard_mb > 0, ConfigError,
              "ckpt convert: --max-shard-mb must be positive, got " << args.max_shard_mb);
    export_hf_model(written, weights.config, weights.tensors, weights.dtype,
                    static_cast<int64_t>(args.max_shard_mb * 1024 * 1024));
  } else if (args.to == "gguf") {
    GgufExportOptions options = args.gguf;
    options.provenance_json = weights.provenance;
    read_special_ids(args.directory, options);
    if (options.tokenizer_json.empty() &&
        std::filesystem::exists(std::filesystem::path(args.directory) / "tokenizer.json"))
      options.tokenizer_json = (std::filesystem::path(args.directory) / "tokenizer.json").string();
    if (options.name.empty()) options.name = std::filesystem::path(args.output).stem().string();
    if (!options.eos_token_id && !options.tokenizer_json.empty()) {
      const int32_t eos = load_tokenizer(options.tokenizer_json)->eos_id();
      if (eos >= 0) options.eos_token_id = eos;
    }
    export_gguf(written, weights.config,
                std::map<std::string, at::Tensor>(weights.tensors.begin(), weights.tensors.end()),
                options);
  } else {
    std::filesystem::create_directories(written);
    save_weights_file((std::filesystem::path(written) / "model.h5").string(), weights.tensors);
    save_hf_config_json((std::filesystem::path(written) / "config.json").string(), weights.config);
  }
  // What the model was made from, beside the weights (GGUF: in its metadata).
  if (args.to != "gguf" && !weights.provenance.empty())
    write_file_atomically((std::filesystem::path(written) / "provenance.json").string(),
                          nlohmann::json::parse(weights.provenance).dump(2) + "\n");
  if (staging)
    staging->seal_into(*output_key, args.to != "gguf"          ? args.output
                                    : output.has_parent_path() ? output.parent_path().string()
                                                               : std::string("."));
  std::printf("wrote %zu tensors of %s to %s (%s%s)\n", weights.tensors.size(),
              weights.description.c_str(), args.output.c_str(), args.to.c_str(),
              output_key ? ", encrypted" : "");
  return 0;
}

}  // namespace dst::cli

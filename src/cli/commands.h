// Subcommands of dstrain beyond train/ckpt/synth (main.cpp): tokenize, prepare and eval.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "deepseek_train/checkpoint/gguf_export.h"
#include "deepseek_train/comm/process_world.h"
#include "deepseek_train/core/launch_env.h"
#include "deepseek_train/inference/generation.h"

namespace dst::cli {

struct TokenizeArgs {
  std::string tokenizer;
  std::string eos_token;
  bool lines = false;   // encode each line on its own
  bool jsonl = false;   // like lines, the texts written as JSON strings (any character fits)
  std::string chat;     // a chat template (ChatTemplate::load): each line a {"messages"} record
  bool decode = false;  // ids (space-separated) -> text
  bool skip_special = false;
  std::string prepared;  // with decode: print the text of this prepared corpus instead of stdin's
  std::string split;     // with prepared: "train" or "validation" (empty: every split)
  std::string key_file;  // with prepared: the key of an encrypted corpus
};
// Reads stdin (or, with --prepared, a prepared corpus), writes ids (or text) to stdout.
int run_tokenize(const TokenizeArgs& args);

struct PrepareArgs {
  std::string recipe;
  std::vector<std::string> overrides;
};
int run_prepare(const PrepareArgs& args);

struct PrivacyArgs {
  double sample_rate = 0.0;  // q: the chance an example joins a step
  int64_t steps = 0;
  double delta = 1e-5;
  double noise_multiplier = 0.0;  // give this or target_epsilon
  double target_epsilon = 0.0;
  double epsilon_tolerance = 0.01;
};
// Prints one line: epsilon, delta, the best RDP order, the noise multiplier, sample rate, steps.
int run_privacy(const PrivacyArgs& args);

struct EvalArgs {
  std::string model;  // Hugging Face folder or checkpoint directory
  std::string data;   // prepared folder
  std::string split = "validation";
  std::string text;  // text file, with --tokenizer
  std::string tokenizer;
  std::string eos_token;
  std::string ids;      // file of whitespace-separated ids
  int64_t seq_len = 0;  // 0: the prepared corpus's, else 256 (bounded by the model)
  int64_t batch_size = 4;
  std::string key_file, key_env;
  std::string adapter;          // PEFT LoRA folder applied to a Hugging Face --model
  std::string dump_logits;      // safetensors file for every window's logits (--ids/--text)
  std::string device = "auto";  // auto | cpu | cuda
};
int run_eval(const EvalArgs& args, const LaunchEnv& env);

struct CkptArgs {
  std::string directory;
  std::string to;      // convert: consolidated | hf | gguf
  std::string output;  // convert
  std::string key_file;
  std::string key_env;
  std::string encrypt_key_file;  // convert: seal every file written with this key
  GgufExportOptions gguf;
  double max_shard_mb = 5120;  // convert --to hf  // convert --to gguf
};
int run_ckpt_inspect(const CkptArgs& args);
int run_ckpt_convert(const CkptArgs& args);

struct GenerateArgs {
  std::string model, adapter, key_file, key_env;
  std::string prompt, prompt_file, ids;  // exactly one
  std::string tokenizer;                 // default: <model>/tokenizer.json when it exists
  std::vector<std::string> stops;        // stop strings
  bool print_ids = false;
  SamplingOptions sampling;
  std::string device = "auto";  // auto | cpu | cuda
  int64_t batch_size = 1;       // prompts decoded together (left-padded)
};
// Generates a continuation of each prompt, streamed to stdout; speed on stderr.
int run_generate(const GenerateArgs& args, const LaunchEnv& env);

}  // namespace dst::cli

// dstrain generate: text (or ids) from a model with a key/value cache, streamed to stdout.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "cli_io.h"
#include "commands.h"
#include "deepseek_train/comm/process_world.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/tokenizer.h"
#include "deepseek_train/inference/generation.h"
#include "inference_model.h"

namespace dst::cli {

namespace fs = std::filesystem;

namespace {

// The BOS id text prompts start with, as transformers' tokenizer(prompt) adds it: when the
// tokenizer_config.json beside the tokenizer (or in the model folder) sets add_bos_token.
std::optional<int32_t> prompt_bos_id(const GenerateArgs& args, const Tokenizer& tokenizer) {
  std::vector<fs::path> candidates = {fs::path(args.model) / "tokenizer_config.json"};
  if (!args.tokenizer.empty() && args.tokenizer != "byte")
    candidates.insert(candidates.begin(),
                      fs::path(args.tokenizer).parent_path() / "tokenizer_config.json");
  for (const fs::path& path : candidates) {
    if (!fs::exists(path)) continue;
    const nlohmann::json config =
        nlohmann::json::parse(read_file(path.string()), nullptr, /*allow_exceptions=*/false);
    if (!config.is_object() || !config.value("add_bos_token", false)) return std::nullopt;
    const nlohmann::json token = config.value("bos_token", nlohmann::json());
    const std::string text = token.is_string()   ? token.get<std::string>()
                             : token.is_object() ? token.value("content", "")
                                                 : "";
    const std::optional<int32_t> id = tokenizer.token_to_id(text);
    DST_CHECK(id.has_value(), ConfigError,
              path.string() << ": bos_token '" << text << "' is not in the tokenizer");
    return id;
  }
  return std::nullopt;
}

// The prompts: --prompt, each line of --prompt-file, or each line of ids of --ids.
std::vector<std::vector<int32_t>> read_prompts(const GenerateArgs& args,
                                               const Tokenizer* tokenizer) {
  const int sources = (args.prompt.empty() ? 0 : 1) + (args.prompt_file.empty() ? 0 : 1) +
                      (args.ids.empty() ? 0 : 1);
  DST_CHECK(sources == 1, ConfigError,
            "generate: give exactly one of --prompt TEXT, --prompt-file FILE, --ids FILE");
  std::vector<std::vector<int32_t>> prompts;
  if (!args.ids.empty()) {
    std::istringstream lines(read_file(args.ids));
    std::string line;
    for (int64_t n = 1; std::getline(lines, line); ++n)
      if (line.find_first_not_of(" \t\r") != std::string::npos)
        prompts.push_back(parse_ids(line, args.ids + ":" + std::to_string(n)));
    return prompts;
  }
  DST_CHECK(tokenizer != nullptr, ConfigError,
            "generate: a text prompt needs --tokenizer (or a tokenizer.json beside the model); "
            "--ids takes token ids");
  const std::optional<int32_t> bos = prompt_bos_id(args, *tokenizer);
  auto encode = [&](const std::string& text) {
    std::vector<int32_t> ids = tokenizer->encode(text);
    if (bos) ids.insert(ids.begin(), *bos);
    return ids;
  };
  if (!args.prompt.empty()) return {encode(args.prompt)};
  std::istringstream lines(read_file(args.prompt_file));
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
    if (!line.empty()) prompts.push_back(encode(line));
  }
  return prompts;
}

// Streams the text of the generated ids to `out`: what decodes completely is written as it comes;
// a stop string ends the generation (and the text before it is all that is written).
class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stops, std::ostream& out)
      : tokenizer_(tokenizer), stops_(std::move(stops)), out_(out) {}
  bool add(int32_t id) {
    ids_.push_back(id);
    // Special tokens stay in: a stop string may be one (<|im_end|>); EOS ids never get here.
    std::string text = tokenizer_.decode(ids_, /*skip_special=*/false);
    bool stop = false;
    for (const std::string& s : stops_) {
      const size_t at = text.find(s);
      if (!s.empty() && at != std::string::npos) {
        text.resize(at);
        stop = true;
      }
    }
    // An incomplete UTF-8 character decodes as U+FFFD: wait for its other bytes. Text that may
    // be the start of a stop string waits for the next token too.
    const bool pending =
        !stop && text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0;
    if (!pending) print(text, stop ? 0 : stop_prefix_length(text));
    text_ = std::move(text);
    return stop;
  }
  // Prints what is still held back (generation ended without a stop string).
  void finish() { print(text_, 0); }

 private:
  // The longest end of `text` that begins some stop string.
  size_t stop_prefix_length(const std::string& text) const {
    size_t longest = 0;
    for (const std::string& s : stops_)
      for (size_t k = std::min(s.empty() ? 0 : s.size() - 1, text.size()); k > longest; --k)
        if (text.compare(text.size() - k, k, s, 0, k) == 0) longest = k;
    return longest;
  }
  void print(const std::string& text, size_t hold) {
    if (text.size() > printed_ + hold) {
      out_ << text.substr(printed_, text.size() - hold - printed_) << std::flush;
      printed_ = text.size() - hold;
    }
  }

  const Tokenizer& tokenizer_;
  std::vector<std::string> stops_;
  std::ostream& out_;
  std::vector<int32_t> ids_;
  std::string text_;
  size_t printed_ = 0;
};

void report_speed(const GenerationResult& result, size_t prompt_tokens) {
  const double decoded = result.ids.size() > 1 ? static_cast<double>(result.ids.size() - 1) : 0;
  std::fprintf(stderr,
               "[generate] prefill %zu tokens in %.3f s (%.1f tokens/s); decode %.0f tokens in "
               "%.3f s (%.1f tokens/s); stop: %s\n",
               prompt_tokens, result.prefill_seconds,
               result.prefill_seconds > 0 ? prompt_tokens / result.prefill_seconds : 0.0, decoded,
               result.decode_seconds,
               result.decode_seconds > 0 ? decoded / result.decode_seconds : 0.0,
               result.stop_reason.c_str());
}

}  // namespace

int run_generate(const GenerateArgs& given, const LaunchEnv& env) {
  GenerateArgs args = given;
  const DecryptedSources decrypted({&args.model, &args.adapter}, args.key_file, args.key_env,
                                   "generate");
  const ModelSource source{args.model,   args.adapter, args.key_file,
                           args.key_env, "generate",   args.device};
  TrainConfig config = inference_config(source);
  std::string tokenizer_path = args.tokenizer;
  if (tokenizer_path.empty() && fs::exists(fs::path(args.model) / "tokenizer.json"))
    tokenizer_path = (fs::path(args.model) / "tokenizer.json").string();
  std::unique_ptr<Tokenizer> tokenizer;
  if (!tokenizer_path.empty()) tokenizer = load_tokenizer(tokenizer_path, "");
  const std::vector<std::vector<int32_t>> prompts = read_prompts(args, tokenizer.get());

  SamplingOptions sampling = args.sampling;
  if (sampling.eos_ids.empty() && !is_checkpoint_dir(args.model))
    sampling.eos_ids = hf_token_ids(args.model, "eos_token_id");
  if (sampling.eos_ids.empty() && tokenizer && tokenizer->eos_id() >= 0)
    sampling.eos_ids = {tokenizer->eos_id()};
  sampling.validate();
  DST_CHECK(args.batch_size >= 1, ConfigError,
            "--batch-size must be at least 1, got " << args.batch_size);
  for (const auto& prompt : prompts)
    for (int32_t id : prompt)
      DST_CHECK(id >= 0 && id < config.model.vocab_size, DataError,
                "generate: prompt token id " << id << " is outside the model's vocabulary of "
                                             << config.model.vocab_size);

  const comm::ProcessWorld processes = open_inference_world(source, env);
  DST_CHECK(
      processes.communicator->size() == 1, ConfigError,
      "generate runs in one process (launched with " << processes.communicator->size() << ")");
  config.data.seq_len = config.model.max_position_embeddings;
  const std::unique_ptr<Trainer> model =
      load_inference_model(source, config, processes.communicator, env);
  const bool text = tokenizer && !args.print_ids;
  const size_t batch = static_cast<size_t>(args.batch_size);
  for (size_t first = 0; first < prompts.size(); first += batch) {
    const std::vector<std::vector<int32_t>> group(
        prompts.begin() + first, prompts.begin() + std::min(prompts.size(), first + batch));
    // One prompt streams to stdout; a batch writes each row's text once the batch is done.
    std::vector<std::ostringstream> buffers(group.size());
    std::vector<TextStream> streams;
    if (text)
      for (size_t r = 0; r < group.size(); ++r)
        streams.emplace_back(*tokenizer, args.stops,
                             group.size() == 1 ? static_cast<std::ostream&>(std::cout)
                                               : static_cast<std::ostream&>(buffers[r]));
    BatchTokenCallback on_token;
    if (text)
      on_token = [&streams, &sampling](size_t row, int32_t id) {
        const auto& eos = sampling.eos_ids;
        return std::find(eos.begin(), eos.end(), id) == eos.end() && streams[row].add(id);
      };
    const std::vector<GenerationResult> results =
        generate_batch(model->model(), group, sampling, on_token);
    for (size_t r = 0; r < group.size(); ++r) {
      if (text) {
        if (results[r].stop_reason != "stop") streams[r].finish();
        std::cout << buffers[r].str() << "\n";
      } else {
        print_ids(results[r].ids);
      }
      report_speed(results[r], group[r].size());
    }
  }
  return 0;
}

}  // namespace dst::cli

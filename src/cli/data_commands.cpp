// dstrain tokenize / prepare / eval.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <sstream>

#include "cli_io.h"
#include "commands.h"
#include "deepseek_train/checkpoint/safetensors.h"
#include "deepseek_train/checkpoint/sharded_checkpoint.h"
#include "deepseek_train/comm/mpi_communicator.h"
#include "deepseek_train/comm/process_world.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/chat_template.h"
#include "deepseek_train/data/corpus_prepare.h"
#include "deepseek_train/data/prepared_dataset.h"
#include "deepseek_train/data/tokenizer.h"
#include "deepseek_train/recipe/recipe.h"
#include "deepseek_train/train/trainer.h"
#include "inference_model.h"

namespace dst::cli {

namespace fs = std::filesystem;

namespace {

// Windows of seq_len + 1 tokens with stride seq_len: every token after the first is predicted
// exactly once; the last window is padded with ignored labels.
std::vector<TokenBatch> windows_of(const std::vector<int32_t>& ids, int64_t seq_len) {
  std::vector<TokenBatch> rows;
  for (int64_t start = 0; start + 1 < static_cast<int64_t>(ids.size()); start += seq_len) {
    TokenBatch row;
    row.rows = 1;
    row.seq_len = seq_len;
    for (int64_t i = 0; i < seq_len; ++i) {
      const int64_t at = start + i;
      const bool has_input = at < static_cast<int64_t>(ids.size());
      const bool has_label = at + 1 < static_cast<int64_t>(ids.size());
      row.input_ids.push_back(has_input ? ids[at] : 0);
      row.labels.push_back(has_label ? ids[at + 1] : kIgnoreIndex);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// Writes the logits of every window (float32 [windows, seq_len, vocab]) and its input ids (int64
// [windows, seq_len]) to a safetensors file, for comparisons with other implementations.
void dump_logits(Trainer& trainer, const std::vector<TokenBatch>& rows, const std::string& path) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ids;
  for (const TokenBatch& row : rows)
    ids.insert(ids.end(), row.input_ids.begin(), row.input_ids.end());
  const int64_t windows = static_cast<int64_t>(rows.size());
  const torch::Tensor input = torch::tensor(ids, torch::kLong).view({windows, -1});
  std::vector<torch::Tensor> logits;
  for (int64_t w = 0; w < windows; ++w)
    logits.push_back(trainer.model()
                         .forward(input.narrow(0, w, 1).to(trainer.device()))
                         .to(torch::kCPU, torch::kFloat));
  const torch::Tensor all = torch::cat(logits).contiguous();
  write_safetensors(path,
                    {{"logits", SafetensorsDtype::F32, all.sizes().vec(), all.data_ptr()},
                     {"input_ids", SafetensorsDtype::I64, input.sizes().vec(), input.data_ptr()}});
}

}  // namespace

// The text of a prepared corpus: each shard of each split (or of args.split), its rows joined
// back into the token stream they were cut from, decoded and printed on its own.
void decode_prepared(const Tokenizer& tokenizer, const TokenizeArgs& args) {
  const std::optional<EncryptionKey> key = load_encryption_key({args.key_file, ""});
  const EncryptionKey* key_ptr = key ? &*key : nullptr;
  const PreparedManifest manifest = read_prepared_manifest(args.prepared, key_ptr);
  DST_CHECK(manifest.tokenizer_fingerprint == tokenizer.fingerprint(), DataError,
            manifest.path << ": prepared with the tokenizer '" << manifest.tokenizer_describe
                          << "', not with " << args.tokenizer);
  DST_CHECK(args.split.empty() || manifest.splits.count(args.split) > 0, DataError,
            manifest.path << ": no split '" << args.split << "'");
  for (const auto& [split, info] : manifest.splits) {
    if ((!args.split.empty() && split != args.split) || info.rows == 0) continue;
    const PreparedDataset dataset(args.prepared, split, tokenizer.fingerprint(), key_ptr);
    int64_t first_row = 0;
    for (const PreparedShardInfo& shard : info.shards) {
      std::vector<int64_t> rows(static_cast<size_t>(shard.rows));
      std::iota(rows.begin(), rows.end(), first_row);
      first_row += shard.rows;
      std::vector<int32_t> tokens;
      std::vector<uint8_t> loss_mask;
      dataset.read_rows(rows, &tokens, &loss_mask);
      std::cout << tokenizer.decode(tokens, args.skip_special) << "\n";
    }
  }
}

namespace {

// --jsonl: one JSON string per line in, one line of ids out (or the reverse with --decode).
void tokenize_jsonl(const Tokenizer& tokenizer, const std::string& input,
                    const TokenizeArgs& args) {
  std::istringstream in(input);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    const std::string where = "stdin:" + std::to_string(n);
    if (args.decode) {
      const std::string text = tokenizer.decode(parse_ids(line, where), args.skip_special);
      std::cout << nlohmann::json(text).dump(-1, ' ', false,
                                             nlohmann::json::error_handler_t::replace)
                << "\n";
      continue;
    }
    nlohmann::json text;
    try {
      text = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      DST_THROW(DataError, where << ": not a JSON string (" << e.what() << ")");
    }
    DST_CHECK(text.is_string(), DataError, where << ": expected a JSON string");
    print_ids(tokenizer.encode(text.get<std::string>()));
  }
}

// --chat: each line a record with "messages", rendered, tokenized whole, ids and mask printed.
void tokenize_chat(const Tokenizer& tokenizer, const std::string& input,
                   const ChatTemplate& chat_template) {
  std::istringstream in(input);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "stdin:" + std::to_string(n);
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      DST_THROW(DataError, where << ": malformed JSON (" << e.what() << ")");
    }
    DST_CHECK(record.is_object() && record.contains("messages"), DataError,
              where << ": expected a JSON object with 'messages'");
    const RenderedChat chat =
        chat_template.render(parse_chat_messages(record["messages"].dump(), where), where);
    const std::vector<int32_t> ids = tokenizer.encode(chat.text);
    print_ids(ids);
    const std::vector<uint8_t> mask = chat_token_mask(tokenizer, ids, chat);
    print_ids(std::vector<int32_t>(mask.begin(), mask.end()));
  }
}

}  // namespace

int run_tokenize(const TokenizeArgs& args) {
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(args.tokenizer, args.eos_token);
  if (!args.prepared.empty()) {
    DST_CHECK(args.decode, ConfigError, "tokenize: --prepared needs --decode");
    decode_prepared(*tokenizer, args);
    return 0;
  }
  // A chat template file is read (and its syntax checked) before the input.
  const std::optional<ChatTemplate> chat_template =
      args.chat.empty() ? std::nullopt : std::optional<ChatTemplate>(ChatTemplate::load(args.chat));
  const std::string input = read_all(std::cin);
  if (args.jsonl) {
    tokenize_jsonl(*tokenizer, input, args);
    return 0;
  }
  if (!args.chat.empty()) {
    tokenize_chat(*tokenizer, input, *chat_template);
    return 0;
  }
  if (args.decode) {
    if (args.lines) {
      std::istringstream in(input);
      std::string line;
      for (int64_t n = 1; std::getline(in, line); ++n)
        std::cout << tokenizer->decode(parse_ids(line, "stdin:" + std::to_string(n)),
                                       args.skip_special)
                  << "\n";
    } else {
      std::cout << tokenizer->decode(parse_ids(input, "stdin"), args.skip_special);
    }
    return 0;
  }
  if (args.lines) {
    std::istringstream in(input);
    std::string line;
    while (std::getline(in, line)) print_ids(tokenizer->encode(line));
  } else {
    print_ids(tokenizer->encode(input));
  }
  return 0;
}

int run_prepare(const PrepareArgs& args) {
  const TrainConfig config = load_recipe(args.recipe, args.overrides);
  try {
    config.prepare.validate();
  } catch (const ConfigError& e) {
    DST_THROW(ConfigError, args.recipe << ": " << e.what());
  }
  const PrepareReport report = prepare_corpus(config.prepare, Logger(0, 1, LogLevel::kInfo));
  std::cout << report.summary();
  return 0;
}

int run_eval(const EvalArgs& given, const LaunchEnv& env) {
  EvalArgs args = given;
  const DecryptedSources decrypted({&args.model, &args.adapter}, args.key_file, args.key_env,
                                   "eval");
  const int sources =
      (args.data.empty() ? 0 : 1) + (args.text.empty() ? 0 : 1) + (args.ids.empty() ? 0 : 1);
  DST_CHECK(
      sources == 1, ConfigError,
      "eval: give exactly one of --data PREPARED, --text FILE (with --tokenizer), --ids FILE");
  DST_CHECK(args.text.empty() || !args.tokenizer.empty(), ConfigError,
            "eval: --text needs --tokenizer (a tokenizer.json or 'byte')");
  DST_CHECK(args.batch_size > 0, ConfigError, "eval: --batch-size must be positive");
  DST_CHECK(args.dump_logits.empty() || args.data.empty(), ConfigError,
            "eval: --dump-logits takes --ids or --text, not --data");

  // The model: a checkpoint (its recipe, adapters included) or a Hugging Face folder.
  const ModelSource source{args.model,   args.adapter, args.key_file,
                           args.key_env, "eval",       args.device};
  TrainConfig config = inference_config(source);
  // Data.
  std::unique_ptr<PreparedDataset> prepared;
  std::vector<TokenBatch> rows;
  int64_t seq_len = args.seq_len;
  if (!args.data.empty()) {
    // The key (--key-file / --key-env) opens an encrypted corpus as well as a checkpoint.
    const std::optional<EncryptionKey> key = load_encryption_key({args.key_file, args.key_env});
    prepared = std::make_unique<PreparedDataset>(args.data, args.split, "", key ? &*key : nullptr);
    DST_CHECK(seq_len == 0 || seq_len == prepared->seq_len(), ConfigError,
              "eval: --seq-len " << seq_len << " differs from the prepared corpus's "
                                 << prepared->seq_len());
    seq_len = prepared->seq_len();
  } else {
    if (seq_len == 0) seq_len = std::min<int64_t>(256, config.model.max_position_embeddings);
    std::vector<int32_t> ids;
    if (!args.ids.empty()) {
      ids = parse_ids(read_file(args.ids), args.ids);
    } else {
      ids = load_tokenizer(args.tokenizer, args.eos_token)->encode(read_file(args.text));
    }
    DST_CHECK(ids.size() >= 2, DataError,
              (args.ids.empty() ? args.text : args.ids) << ": fewer than 2 tokens to evaluate");
    for (int32_t id : ids)
      DST_CHECK(id < config.model.vocab_size, DataError,
                (args.ids.empty() ? args.text : args.ids)
                    << ": token id " << id << " is outside the model's vocabulary of "
                    << config.model.vocab_size);
    rows = windows_of(ids, seq_len);
  }
  DST_CHECK(seq_len <= config.model.max_position_embeddings, ConfigError,
            "eval: sequences of " << seq_len << " tokens exceed max_position_embeddings "
                                  << config.model.max_position_embeddings);

  const comm::ProcessWorld processes = open_inference_world(source, env);
  const comm::CommunicatorPtr& world = processes.communicator;
  DST_CHECK(args.dump_logits.empty() || world->size() == 1, ConfigError,
            "eval: --dump-logits runs in one process");
  config.data.seq_len = seq_len;
  const std::unique_ptr<Trainer> model = load_inference_model(source, config, world, env);
  Trainer& trainer = *model;

  // Rank r evaluates rows r, r + world, ...; every rank runs the same number of batches.
  const int64_t total = prepared ? prepared->size() : static_cast<int64_t>(rows.size());
  const int64_t per_batch = args.batch_size * world->size();
  double loss_sum = 0.0, tokens = 0.0;
  for (int64_t first = 0; first < total; first += per_batch) {
    std::vector<int64_t> mine;
    for (int64_t i = first + world->rank(); i < std::min(total, first + per_batch);
         i += world->size())
      mine.push_back(i);
    TokenBatch batch;
    if (mine.empty()) {  // nothing left for this rank: an all-ignored row keeps ranks in step
      batch.rows = 1;
      batch.seq_len = seq_len;
      batch.input_ids.assign(seq_len, 0);
      batch.labels.assign(seq_len, kIgnoreIndex);
    } else if (prepared) {
      batch = prepared->batch(mine);
    } else {
      batch.rows = static_cast<int64_t>(mine.size());
      batch.seq_len = seq_len;
      for (int64_t i : mine) {
        batch.input_ids.insert(batch.input_ids.end(), rows[i].input_ids.begin(),
                               rows[i].input_ids.end());
        batch.labels.insert(batch.labels.end(), rows[i].labels.begin(), rows[i].labels.end());
      }
    }
    const auto [sum, count] = trainer.evaluate_sums({to_micro_batch(batch)});
    loss_sum += sum;
    tokens += count;
  }
  DST_CHECK(tokens > 0, DataError, "eval: no target tokens");
  const double loss = loss_sum / tokens;
  if (!args.dump_logits.empty()) dump_logits(trainer, rows, args.dump_logits);
  if (world->rank() == 0)
    std::printf("loss %.6f perplexity %.4f tokens %.0f sequences %lld seq_len %lld model %s\n",
                loss, std::exp(loss), tokens, static_cast<long long>(total),
                static_cast<long long>(seq_len), args.model.c_str());
  return 0;
}

}  // namespace dst::cli

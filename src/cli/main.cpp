// dstrain: the command-line front end. Subcommands: train (a YAML recipe, with key=value
// overrides and --resume), prepare (a corpus into HDF5 shards), eval (loss and perplexity of a
// model on data), tokenize (stdin through a tokenizer), ckpt (inspect / convert checkpoints),
// synth (write the synthetic quickstart corpus). Every failure ends with one line on
// stderr and a non-zero exit code: 2 for bad input (recipe, arguments), 1 for anything else.
#include <torch/version.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>

#include "commands.h"
#include "deepseek_train/checkpoint/hf_interop.h"
#include "deepseek_train/checkpoint/sharded_checkpoint.h"
#include "deepseek_train/checkpoint/weights_file.h"
#include "deepseek_train/comm/mpi_communicator.h"
#include "deepseek_train/comm/process_world.h"
#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/build_info.h"
#include "deepseek_train/core/device.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/core/launch_env.h"
#include "deepseek_train/core/log.h"
#include "deepseek_train/data/synthetic_corpus.h"
#include "deepseek_train/recipe/recipe.h"
#include "deepseek_train/train/trainer.h"
#include "deepseek_train/version.h"

namespace {

constexpr int kExitRuntimeError = 1;
constexpr int kExitBadInput = 2;

struct TrainArgs {
  std::string recipe;
  std::vector<std::string> overrides;
  bool print_config = false;
  std::string resume;
};

struct SynthArgs {
  std::string output;
  int64_t documents = 20000;
  uint64_t seed = 1;
};

// Library errors are one line already; errors raised inside libtorch carry a backtrace after
// the first line, which is noise for a user.
std::string first_line(const char* what) {
  std::string text = what;
  const size_t newline = text.find('\n');
  return newline == std::string::npos ? text : text.substr(0, newline);
}

int run_train(const TrainArgs& args, const dst::LaunchEnv& env) {
  dst::TrainConfig config = dst::load_recipe(args.recipe, args.overrides);
  if (!args.resume.empty()) config.train.resume = args.resume;
  if (args.print_config) {
    if (env.rank == 0) std::cout << dst::recipe_to_yaml(config);
    return 0;
  }
  dst::Logger logger(env.rank, env.world_size, dst::parse_log_level(config.train.log_level));

  // The device decides the backend (CUDA tensors: NCCL, or MPI staged through host memory).
  const dst::DeviceInventory devices = dst::probe_devices(dst::process_env());
  const c10::Device device = dst::resolve_device(config.train.device, env, devices);
  const dst::comm::ProcessWorld processes = dst::comm::open_process_world(config.comm, env, device);
  dst::comm::MpiRuntime* mpi = processes.mpi.get();
  const dst::comm::CommunicatorPtr& world = processes.communicator;
  try {
    const char* fault_spec = std::getenv("DST_FAULT");
    const dst::FaultPlan fault_plan =
        dst::FaultPlan::parse(fault_spec ? fault_spec : "", "DST_FAULT");
    if (!fault_plan.empty()) logger.warn("fault injection armed: " + fault_plan.describe());
    config.parallel.validate(world->size());
    const int threads = dst::configure_intra_op_threads(config.train, env);
    logger.info(std::string("deepseek_train ") + dst::kVersion + " | " + env.describe() +
                " | backend " + world->backend() + " | " + config.parallel.describe() +
                " | device " + device.str() + " | " + std::to_string(threads) +
                " intra-op threads per rank");
    dst::ProcessGroups groups = dst::ProcessGroups::create(world, config.parallel);
    if (world->rank() == 0) {
      std::error_code error;
      std::filesystem::create_directories(config.train.output_dir, error);
      DST_CHECK(!error, IoError,
                "train.output_dir '" << config.train.output_dir
                                     << "': cannot create the directory: " << error.message());
      dst::write_file_atomically(
          (std::filesystem::path(config.train.output_dir) / "recipe.yaml").string(),
          dst::recipe_to_yaml(config));
    }
    dst::Trainer trainer(config, std::move(groups), logger);
    trainer.set_recipe_text(dst::recipe_to_yaml(config));
    trainer.set_fault_plan(fault_plan);
    trainer.run();
  } catch (const std::exception& e) {
    const bool bad_input = dynamic_cast<const dst::ConfigError*>(&e) != nullptr;
    const int code = bad_input ? kExitBadInput : kExitRuntimeError;
    // Errors from the same input are raised on every rank: say them once. Other errors may be
    // rank-specific (a file missing on one node): each rank says its own, naming itself.
    if (bad_input || world->size() == 1) {
      if (world->rank() == 0)
        std::fprintf(stderr, "dstrain: error: %s\n", first_line(e.what()).c_str());
    } else {
      std::fprintf(stderr, "dstrain: error: rank %d: %s\n", world->rank(),
                   first_line(e.what()).c_str());
    }
    if (mpi && world->size() > 1) {
      std::fflush(stderr);
      mpi->abort(code);
    }
    return code;
  }
  return 0;
}

int run_synth(const SynthArgs& args) {
  DST_CHECK(args.documents > 0, ConfigError, "synth: --docs must be positive");
  auto documents = dst::generate_synthetic_corpus(args.documents, args.seed);
  dst::write_text_corpus(args.output, documents);
  size_t bytes = 0;
  for (const auto& d : documents) bytes += d.size() + 1;
  std::printf("wrote %zu documents (%zu bytes) to %s\n", documents.size(), bytes,
              args.output.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dstrain: distributed training and fine-tuning of LLaMA/DeepSeek-style models",
               "dstrain"};
  app.set_version_flag("--version", std::string("dstrain ") + dst::kVersion + " (" +
                                        dst::build_info().describe() + ")");
  app.require_subcommand(1);

  TrainArgs train_args;
  auto* train = app.add_subcommand("train", "train a model from a YAML recipe");
  train->add_option("recipe", train_args.recipe, "recipe file (YAML)")->required();
  train->add_option("overrides", train_args.overrides, "key.path=value overrides of the recipe");
  train->add_flag("--print-config", train_args.print_config,
                  "print the resolved recipe (defaults and overrides applied) and exit");
  train->add_option("--resume", train_args.resume,
                    "continue from a checkpoint: 'latest' (<output_dir>/checkpoints/latest) or a "
                    "checkpoint directory");

  dst::cli::CkptArgs ckpt_args;
  auto* ckpt = app.add_subcommand("ckpt", "inspect or convert sharded checkpoints");
  ckpt->require_subcommand(1);
  auto* inspect = ckpt->add_subcommand("inspect", "print a checkpoint's manifest and verify it");
  inspect->add_option("dir", ckpt_args.directory, "checkpoint directory")->required();
  auto* convert = ckpt->add_subcommand(
      "convert",
      "write the model weights of a checkpoint (or a Hugging Face folder) as one file "
      "(consolidated), a Hugging Face folder (hf) or a llama.cpp model (gguf)");
  convert->add_option("dir", ckpt_args.directory, "checkpoint directory or Hugging Face folder")
      ->required();
  convert->add_option("--to", ckpt_args.to, "consolidated | hf | gguf")->required();
  convert->add_option("--encrypt-key-file", ckpt_args.encrypt_key_file,
                      "seal every file written (AES-256-GCM) with this key; dstrain eval and "
                      "generate read it with --key-file (transformers and llama.cpp cannot)");
  convert->add_option("output", ckpt_args.output, "output folder (gguf: output file)")->required();
  convert
      ->add_option("--max-shard-mb", ckpt_args.max_shard_mb,
                   "hf: weights past this size go into shards with an index")
      ->capture_default_str();
  convert->add_option("--dtype", ckpt_args.gguf.dtype, "gguf: f32 | f16 | bf16 | q8_0")
      ->capture_default_str();
  convert->add_option("--tokenizer", ckpt_args.gguf.tokenizer_json,
                      "gguf: tokenizer.json to embed (default: the folder's own)");
  convert->add_option("--gguf-pre", ckpt_args.gguf.tokenizer_pre,
                      "gguf: llama.cpp pre-tokenizer name (default: recognised)");
  convert->add_option("--name", ckpt_args.gguf.name, "gguf: general.name");
  for (auto* command : {inspect, convert}) {
    command->add_option("--key-file", ckpt_args.key_file, "encryption key file");
    command->add_option("--key-env", ckpt_args.key_env, "variable holding the encryption key");
  }

  SynthArgs synth_args;
  auto* synth =
      app.add_subcommand("synth", "write the synthetic quickstart corpus (one document per line)");
  synth->add_option("output", synth_args.output, "output text file")->required();
  synth->add_option("--docs", synth_args.documents, "number of documents")->capture_default_str();
  synth->add_option("--seed", synth_args.seed, "random seed")->capture_default_str();

  dst::cli::TokenizeArgs tokenize_args;
  auto* tokenize = app.add_subcommand(
      "tokenize", "encode stdin (as one text) and print its ids space-separated, or decode ids");
  tokenize->add_option("--tokenizer", tokenize_args.tokenizer, "tokenizer.json or 'byte'")
      ->required();
  tokenize->add_option("--eos-token", tokenize_args.eos_token, "end-of-document token");
  tokenize->add_flag("--lines", tokenize_args.lines, "encode (or decode) each line on its own");
  tokenize->add_option("--chat", tokenize_args.chat,
                       "chatml | deepseek | llama3, or a model's Jinja chat template (its "
                       "tokenizer_config.json, a .jinja file or the model folder): each line a "
                       "{\"messages\": [...]} record; prints its ids, then a line of 0/1 (1: "
                       "trained, the assistant turns)");
  tokenize->add_flag("--jsonl", tokenize_args.jsonl,
                     "each line a JSON string: encode each to a line of ids (with --decode, each "
                     "line of ids to a JSON string)");
  tokenize->add_flag("--decode", tokenize_args.decode, "read ids, print the text");
  tokenize->add_flag("--skip-special", tokenize_args.skip_special,
                     "leave special tokens out when decoding");
  tokenize->add_option("--prepared", tokenize_args.prepared,
                       "with --decode: print the text of this prepared corpus (dstrain prepare), "
                       "one line per shard");
  tokenize->add_option("--split", tokenize_args.split,
                       "with --prepared: train or validation (default: both)");
  tokenize->add_option("--key-file", tokenize_args.key_file,
                       "with --prepared: the key of an encrypted corpus");

  dst::cli::PrivacyArgs privacy_args;
  auto* privacy = app.add_subcommand(
      "privacy",
      "DP-SGD privacy budget (RDP accountant): epsilon of a plan, or the noise multiplier that "
      "meets a target epsilon");
  privacy
      ->add_option("--sample-rate", privacy_args.sample_rate,
                   "chance an example joins a step (batch size / dataset size)")
      ->required();
  privacy->add_option("--steps", privacy_args.steps, "optimizer steps")->required();
  privacy->add_option("--delta", privacy_args.delta, "delta")->capture_default_str();
  privacy->add_option("--noise-multiplier", privacy_args.noise_multiplier,
                      "noise std / clipping norm");
  privacy->add_option("--target-epsilon", privacy_args.target_epsilon,
                      "solve for the noise multiplier meeting this epsilon");
  privacy
      ->add_option("--epsilon-tolerance", privacy_args.epsilon_tolerance,
                   "with --target-epsilon: how far below the target the result may land")
      ->capture_default_str();

  dst::cli::PrepareArgs prepare_args;
  auto* prepare = app.add_subcommand(
      "prepare",
      "clean, de-duplicate, scrub PII, tokenize and pack a corpus (recipe section "
      "'prepare:') into HDF5 shards");
  prepare->add_option("recipe", prepare_args.recipe, "recipe file (YAML)")->required();
  prepare->add_option("overrides", prepare_args.overrides, "key.path=value overrides");

  dst::cli::EvalArgs eval_args;
  auto* eval = app.add_subcommand("eval", "mean token loss and perplexity of a model on data");
  eval->add_option("--model", eval_args.model, "Hugging Face folder or checkpoint directory")
      ->required();
  eval->add_option("--data", eval_args.data, "prepared corpus folder (dstrain prepare)");
  eval->add_option("--split", eval_args.split, "train | validation (with --data)")
      ->capture_default_str();
  eval->add_option("--text", eval_args.text, "text file (with --tokenizer)");
  eval->add_option("--tokenizer", eval_args.tokenizer, "tokenizer.json or 'byte' (with --text)");
  eval->add_option("--eos-token", eval_args.eos_token, "end-of-document token");
  eval->add_option("--ids", eval_args.ids, "file of whitespace-separated token ids");
  eval->add_option("--seq-len", eval_args.seq_len, "tokens per window (text/ids; default 256)");
  eval->add_option("--batch-size", eval_args.batch_size, "windows per rank per batch")
      ->capture_default_str();
  eval->add_option("--key-file", eval_args.key_file,
                   "encryption key file (an encrypted checkpoint or --data corpus)");
  eval->add_option("--key-env", eval_args.key_env, "variable holding the encryption key");
  eval->add_option("--adapter", eval_args.adapter,
                   "PEFT LoRA adapter folder applied to the Hugging Face --model");
  eval->add_option("--device", eval_args.device, "auto | cpu | cuda (as train.device)")
      ->capture_default_str();
  eval->add_option("--dump-logits", eval_args.dump_logits,
                   "write every window's logits and input ids to this safetensors file "
                   "(--ids/--text, one process)");

  dst::cli::GenerateArgs gen_args;
  auto* gen = app.add_subcommand("generate", "continue a prompt with a model (key/value cache)");
  gen->add_option("--model", gen_args.model, "Hugging Face folder or checkpoint directory")
      ->required();
  gen->add_option("--adapter", gen_args.adapter, "PEFT LoRA adapter folder (Hugging Face --model)");
  gen->add_option("--prompt", gen_args.prompt, "prompt text");
  gen->add_option("--prompt-file", gen_args.prompt_file, "file of prompts, one per line");
  gen->add_option("--ids", gen_args.ids, "file of prompts as token ids, one prompt per line");
  gen->add_option("--tokenizer", gen_args.tokenizer,
                  "tokenizer.json (default: the model folder's tokenizer.json)");
  gen->add_option("--max-new-tokens", gen_args.sampling.max_new_tokens, "tokens to generate")
      ->capture_default_str();
  gen->add_flag("--greedy", gen_args.sampling.greedy, "always the most likely token");
  gen->add_option("--temperature", gen_args.sampling.temperature)->capture_default_str();
  gen->add_option("--top-k", gen_args.sampling.top_k, "0: off")->capture_default_str();
  gen->add_option("--top-p", gen_args.sampling.top_p, "1: off")->capture_default_str();
  gen->add_option("--repetition-penalty", gen_args.sampling.repetition_penalty)
      ->capture_default_str();
  gen->add_option("--seed", gen_args.sampling.seed, "sampling seed")->capture_default_str();
  gen->add_option("--eos-id", gen_args.sampling.eos_ids,
                  "end-of-sequence id (repeatable; default: the model's eos_token_id)");
  gen->add_option("--stop", gen_args.stops, "stop string (repeatable)");
  gen->add_flag("--print-ids", gen_args.print_ids, "print the generated ids, not text");
  gen->add_option("--device", gen_args.device, "auto | cpu | cuda (as train.device)")
      ->capture_default_str();
  gen->add_option("--batch-size", gen_args.batch_size,
                  "prompts of --prompt-file/--ids decoded together (left-padded; output per "
                  "prompt once its batch is done)")
      ->capture_default_str();
  gen->add_option("--key-file", gen_args.key_file, "encryption key file (checkpoints)");
  gen->add_option("--key-env", gen_args.key_env, "variable holding the encryption key");

  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (CLI::App* command : app.get_subcommands([](CLI::App*) { return true; })) {
      known = known || command->check_name(argv[1]);
      names += (names.empty() ? "" : ", ") + command->get_name();
    }
    if (!known) {
      std::fprintf(
          stderr, "dstrain: error: unknown command '%s' (expected one of %s; see dstrain --help)\n",
          argv[1], names.c_str());
      return kExitBadInput;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "dstrain: error: %s (see dstrain --help)\n", e.what());
    return kExitBadInput;
  }

  dst::LaunchEnv env;
  try {
    env = dst::detect_launch_env(dst::process_env());
    if (*train) return run_train(train_args, env);
    if (*synth) return run_synth(synth_args);
    if (*tokenize) return dst::cli::run_tokenize(tokenize_args);
    if (*prepare) return dst::cli::run_prepare(prepare_args);
    if (*privacy) return dst::cli::run_privacy(privacy_args);
    if (*eval) return dst::cli::run_eval(eval_args, env);
    if (*gen) return dst::cli::run_generate(gen_args, env);
    if (*inspect) return dst::cli::run_ckpt_inspect(ckpt_args);
    if (*convert) return dst::cli::run_ckpt_convert(ckpt_args);
  } catch (const dst::ConfigError& e) {
    if (env.rank == 0) std::fprintf(stderr, "dstrain: error: %s\n", first_line(e.what()).c_str());
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dstrain: error: %s\n", first_line(e.what()).c_str());
    return kExitRuntimeError;
  }
  return 0;
}

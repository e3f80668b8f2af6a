// Tests of YAML recipes: parsing, strictness (one-line errors naming file, line and key),
// overrides, validation, hf_config loading and the recipe_to_yaml round trip.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "deepseek_train/core/error.h"
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/recipe/recipe.h"

namespace fs = std::filesystem;
using dst::ConfigError;
using dst::parse_recipe;
using dst::TrainConfig;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path =
        fs::temp_directory_path() / ("dst_test_recipe_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path);
  out << text;
}

// The ConfigError message of fn(), checked to be a single line; fails the test if none is thrown.
std::string config_error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    const std::string message = e.what();
    CHECK(message.find('\n') == std::string::npos);
    return message;
  }
  FAIL("expected a ConfigError");
  return "";
}

std::string parse_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return config_error_of([&] { parse_recipe(yaml, "configs/x.yaml", overrides); });
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

const char* const kFullRecipe = R"(# a full recipe
model:
  vocab_size: 300
  hidden_size: 64
  intermediate_size: 176
  num_hidden_layers: 3
  num_attention_heads: 8
  num_key_value_heads: 2
  rms_norm_eps: 1.0e-6
  rope_theta: 500000
  max_position_embeddings: 512
  tie_word_embeddings: true
  initializer_range: 0.01
parallel:
  dp: 4
  tp: 1
  pp: 1
  bucket_mb: 12.5
  zero_stage: 0
optim:
  name: adamw
  lr: 1e-3
  beta1: 0.8
  beta2: 0.99
  eps: 1e-7
  weight_decay: 0.05
  grad_clip: 0.5
schedule:
  type: linear
  warmup_steps: 20
  min_lr: 1e-4
data:
  train_path: data/train.txt
  val_path: data/val.txt
  val_fraction: 0.1
  seq_len: 256
  tokenizer: byte
train:
  steps: 1000
  micro_batch_size: 8
  grad_accum: 2
  seed: 18446744073709551615
  log_every: 5
  eval_every: 0
  eval_batches: 3
  output_dir: runs/full
  threads: 2
  log_level: debug
comm:
  backend: local
  timeout_s: 60
)";

}  // namespace

TEST_CASE("recipe: a full recipe fills every field", "[recipe]") {
  const TrainConfig c = parse_recipe(kFullRecipe, "full.yaml");
  CHECK(c.model.vocab_size == 300);
  CHECK(c.model.hidden_size == 64);
  CHECK(c.model.intermediate_size == 176);
  CHECK(c.model.num_hidden_layers == 3);
  CHECK(c.model.num_attention_heads == 8);
  CHECK(c.model.num_key_value_heads == 2);
  CHECK(c.model.rms_norm_eps == 1.0e-6);
  CHECK(c.model.rope_theta == 500000.0);
  CHECK(c.model.max_position_embeddings == 512);
  CHECK(c.model.tie_word_embeddings);
  CHECK(c.model.initializer_range == 0.01);
  CHECK(c.parallel.dp == 4);
  CHECK(c.parallel.tp == 1);
  CHECK(c.parallel.pp == 1);
  CHECK(c.data_parallel.bucket_mb == 12.5);
  CHECK(c.data_parallel.zero_stage == 0);
  CHECK(c.optim.lr == 1e-3);
  CHECK(c.optim.beta1 == 0.8);
  CHECK(c.optim.beta2 == 0.99);
  CHECK(c.optim.eps == 1e-7);
  CHECK(c.optim.weight_decay == 0.05);
  CHECK(c.optim.grad_clip == 0.5);
  CHECK(c.schedule.type == dst::LrScheduleType::kLinear);
  CHECK(c.schedule.warmup_steps == 20);
  CHECK(c.schedule.min_lr == 1e-4);
  CHECK(c.data.train_path == "data/train.txt");
  CHECK(c.data.val_path == "data/val.txt");
  CHECK(c.data.val_fraction == 0.1);
  CHECK(c.data.seq_len == 256);
  CHECK(c.data.tokenizer == "byte");
  CHECK(c.train.steps == 1000);
  CHECK(c.train.micro_batch_size == 8);
  CHECK(c.train.grad_accum == 2);
  CHECK(c.train.seed == 18446744073709551615ull);
  CHECK(c.train.log_every == 5);
  CHECK(c.train.eval_every == 0);
  CHECK(c.train.eval_batches == 3);
  CHECK(c.train.output_dir == "runs/full");
  CHECK(c.train.threads == 2);
  CHECK(c.train.log_level == "debug");
  CHECK(c.comm.backend == "local");
  CHECK(c.comm.timeout_s == 60.0);
}

TEST_CASE("recipe: absent sections and keys keep the struct defaults", "[recipe]") {
  const TrainConfig defaults;
  for (const std::string text : {"", "# only a comment\n", "model:\n", "train: {}\n"}) {
    INFO("recipe text: " << text);
    const TrainConfig c = parse_recipe(text, "empty.yaml");
    CHECK(c.model.hidden_size == defaults.model.hidden_size);
    CHECK(c.model.rms_norm_eps == defaults.model.rms_norm_eps);
    CHECK(c.parallel.dp == defaults.parallel.dp);
    CHECK(c.data_parallel.bucket_mb == defaults.data_parallel.bucket_mb);
    CHECK(c.optim.lr == defaults.optim.lr);
    CHECK(c.schedule.type == defaults.schedule.type);
    CHECK(c.data.seq_len == defaults.data.seq_len);
    CHECK(c.train.steps == defaults.train.steps);
    CHECK(c.train.seed == defaults.train.seed);
    CHECK(c.train.output_dir == defaults.train.output_dir);
    CHECK(c.comm.backend == defaults.comm.backend);
  }
  const TrainConfig partial = parse_recipe("train:\n  steps: 7\n", "partial.yaml");
  CHECK(partial.train.steps == 7);
  CHECK(partial.train.micro_batch_size == defaults.train.micro_batch_size);
}

TEST_CASE("recipe: optim.betas and optim.name", "[recipe]") {
  const TrainConfig c = parse_recipe("optim:\n  betas: [0.85, 0.98]\n", "b.yaml");
  CHECK(c.optim.beta1 == 0.85);
  CHECK(c.optim.beta2 == 0.98);
  CHECK_THAT(parse_error("optim:\n  betas: [0.9]\n"), Catch::Contains("configs/x.yaml:2:") &&
                                                          Catch::Contains("'optim.betas'") &&
                                                          Catch::Contains("sequence of 2"));
  CHECK_THAT(parse_error("optim:\n  betas: [0.9, x]\n"),
             Catch::Contains("configs/x.yaml:2:") && Catch::Contains("optim.betas[1]"));
  CHECK_THAT(parse_error("optim:\n  betas: [0.9, 0.95]\n  beta1: 0.8\n"),
             Catch::Contains("optim.betas") && Catch::Contains("optim.beta1"));
  CHECK_THAT(parse_error("optim:\n  lr: 0.1\n  name: sgd\n"),
             Catch::Contains("configs/x.yaml:3:") && Catch::Contains("'optim.name'") &&
                 Catch::Contains("sgd"));
}

TEST_CASE("recipe: unknown keys name the file, line and dotted key", "[recipe]") {
  const std::string message = parse_error("model:\n  vocab_size: 300\n  hiden_size: 64\n");
  CHECK(starts_with(message, "configs/x.yaml:3: unknown key 'model.hiden_size'"));
  CHECK_THAT(message, Catch::Contains("hidden_size"));  // the known keys are listed

  CHECK(starts_with(parse_error("train:\n  steps: 1\nmodle:\n  vocab_size: 3\n"),
                    "configs/x.yaml:3: unknown key 'modle'"));
  CHECK(starts_with(parse_error("model: 5\n"),
                    "configs/x.yaml:1: section 'model' must be a mapping"));
  CHECK(starts_with(parse_error("\n\ntrain: [1, 2]\n"),
                    "configs/x.yaml:3: section 'train' must be a mapping"));
  CHECK_THAT(parse_error("- model\n- train\n"),
             Catch::StartsWith("configs/x.yaml:1:") && Catch::Contains("mapping"));
}

TEST_CASE("recipe: values of the wrong type are rejected", "[recipe]") {
  SECTION("integers") {
    for (const std::string bad : {"abc", "1.5", "true", "1e3", "[1]", "{a: 1}", "", "~", "0x10"}) {
      INFO("value: " << bad);
      const std::string message = parse_error("train:\n  seed: 1\n  steps: " + bad + "\n");
      CHECK(starts_with(message, "configs/x.yaml:3: key 'train.steps' expects an integer"));
    }
    CHECK_THAT(
        parse_error("train:\n  steps: abc\n"),
        Catch::Contains("configs/x.yaml:2: key 'train.steps' expects an integer, got 'abc'"));
    // Out of range for the member's type.
    CHECK_THAT(parse_error("parallel:\n  dp: 3000000000\n"), Catch::Contains("configs/x.yaml:2:") &&
                                                                 Catch::Contains("'parallel.dp'") &&
                                                                 Catch::Contains("3000000000"));
    CHECK_THAT(parse_error("train:\n  steps: 99999999999999999999\n"),
               Catch::Contains("configs/x.yaml:2:") && Catch::Contains("'train.steps'"));
    CHECK_THAT(parse_error("train:\n  seed: -1\n"),
               Catch::Contains("configs/x.yaml:2:") && Catch::Contains("'train.seed'"));
    CHECK(parse_recipe("train:\n  steps: +12\n", "ok.yaml").train.steps == 12);
  }
  SECTION("floats") {
    for (const std::string bad : {"abc", "true", "[0.1]", "", "1.0.0", "inf", "0x1p3"}) {
      INFO("value: " << bad);
      CHECK(starts_with(parse_error("optim:\n  lr: " + bad + "\n"),
                        "configs/x.yaml:2: key 'optim.lr' expects a number"));
    }
    CHECK(parse_recipe("optim:\n  lr: 1\n", "ok.yaml").optim.lr == 1.0);
    CHECK(parse_recipe("optim:\n  lr: .5\n", "ok.yaml").optim.lr == 0.5);
    CHECK(parse_recipe("optim:\n  grad_clip: -1\n", "ok.yaml").optim.grad_clip == -1.0);
    CHECK_THAT(parse_error("optim:\n  lr: 1e999\n"),
               Catch::Contains("configs/x.yaml:2:") && Catch::Contains("'optim.lr'"));
  }
  SECTION("booleans") {
    for (const std::string bad : {"yes", "1", "True", "on", "", "[true]"}) {
      INFO("value: " << bad);
      CHECK(starts_with(parse_error("model:\n  tie_word_embeddings: " + bad + "\n"),
                        "configs/x.yaml:2: key 'model.tie_word_embeddings' expects a boolean"));
    }
    CHECK_FALSE(
        parse_recipe("model:\n  tie_word_embeddings: false\n", "ok").model.tie_word_embeddings);
  }
  SECTION("strings") {
    CHECK(starts_with(parse_error("train:\n  output_dir: [a, b]\n"),
                      "configs/x.yaml:2: key 'train.output_dir' expects a string, got a sequence"));
    CHECK(starts_with(parse_error("train:\n  output_dir: {a: b}\n"),
                      "configs/x.yaml:2: key 'train.output_dir' expects a string, got a mapping"));
    CHECK(starts_with(parse_error("train:\n  output_dir:\n  steps: 3\n"),
                      "configs/x.yaml:2: key 'train.output_dir' expects a string, got null"));
    // Any scalar is a string.
    CHECK(parse_recipe("train:\n  output_dir: 123\n", "ok").train.output_dir == "123");
  }
  SECTION("schedule type") {
    CHECK_THAT(parse_error("schedule:\n  type: exponential\n"),
               Catch::StartsWith("configs/x.yaml:2: key 'schedule.type'") &&
                   Catch::Contains("exponential"));
    CHECK(parse_recipe("schedule:\n  type: constant\n", "ok").schedule.type ==
          dst::LrScheduleType::kConstant);
  }
}

TEST_CASE("recipe: malformed YAML reports the line", "[recipe]") {
  const std::string message = parse_error("model:\n  vocab_size: 300\n  betas: [1,\ntrain:\n");
  CHECK_THAT(message, Catch::StartsWith("configs/x.yaml:") && Catch::Contains("malformed YAML"));
  CHECK_THAT(message, !Catch::Contains("yaml-cpp: error at"));
  const std::string bad_indent = parse_error("model:\n  vocab_size: 300\n hidden_size: 3\n");
  CHECK_THAT(bad_indent, Catch::StartsWith("configs/x.yaml:3: malformed YAML: "));
}

TEST_CASE("recipe: duplicate keys are rejected", "[recipe]") {
  CHECK(
      starts_with(parse_error("model:\n  hidden_size: 64\n  vocab_size: 300\n  hidden_size: 32\n"),
                  "configs/x.yaml:4: duplicate key 'model.hidden_size'"));
  CHECK(starts_with(parse_error("train:\n  steps: 1\ntrain:\n  steps: 2\n"),
                    "configs/x.yaml:3: duplicate key 'train'"));
}

TEST_CASE("recipe: overrides", "[recipe]") {
  const std::string base = "model:\n  hidden_size: 64\ntrain:\n  steps: 10\n";
  SECTION("values are applied in order, sections are created") {
    const TrainConfig c =
        parse_recipe(base, "x.yaml",
                     {"train.steps=20", "model.hidden_size=32", "optim.lr=0.01",
                      "optim.betas=[0.5, 0.6]", "schedule.type=constant", "train.steps=30",
                      "data.train_path=a/b c.txt", "model.tie_word_embeddings=true"});
    CHECK(c.train.steps == 30);
    CHECK(c.model.hidden_size == 32);
    CHECK(c.optim.lr == 0.01);
    CHECK(c.optim.beta1 == 0.5);
    CHECK(c.optim.beta2 == 0.6);
    CHECK(c.schedule.type == dst::LrScheduleType::kConstant);
    CHECK(c.data.train_path == "a/b c.txt");
    CHECK(c.model.tie_word_embeddings);
    // Only the overridden keys change.
    CHECK(c.model.vocab_size == TrainConfig().model.vocab_size);
    // Overrides apply to an empty recipe too, and into a "section:" left null.
    CHECK(parse_recipe("", "e.yaml", {"comm.backend=mpi"}).comm.backend == "mpi");
    CHECK(parse_recipe("comm:\n", "e.yaml", {"comm.timeout_s=5"}).comm.timeout_s == 5.0);
    CHECK(parse_recipe(base, "x.yaml", {"train={steps: 9}"}).train.steps == 9);
  }
  SECTION("bad format") {
    for (const std::string bad : {"train.steps", "=5", "train..steps=5", ".steps=5", "train.=1"}) {
      INFO("override: " << bad);
      CHECK_THAT(parse_error(base, {bad}),
                 Catch::StartsWith("override '" + bad + "': expected key.path=value"));
    }
    CHECK_THAT(parse_error(base, {"optim.betas=[0.9,"}),
               Catch::StartsWith("override 'optim.betas=[0.9,': malformed value"));
    CHECK_THAT(
        parse_error("model: 5\n", {"model.hidden_size=3"}),
        Catch::StartsWith("override 'model.hidden_size=3':") && Catch::Contains("not a mapping"));
  }
  SECTION("unknown keys name the override") {
    CHECK(starts_with(parse_error(base, {"model.hiden=3"}),
                      "override 'model.hiden=3': unknown key 'model.hiden'"));
    CHECK(starts_with(parse_error(base, {"modl.hidden_size=3"}),
                      "override 'modl.hidden_size=3': unknown key 'modl'"));
    CHECK(starts_with(parse_error(base, {"model.hidden_size.x=3"}),
                      "override 'model.hidden_size.x=3':"));
    CHECK(starts_with(parse_error(base, {"train={stepz: 9}"}),
                      "override 'train={stepz: 9}': unknown key 'train.stepz'"));
  }
  SECTION("wrong types name the override") {
    CHECK(
        starts_with(parse_error(base, {"train.steps=abc"}),
                    "override 'train.steps=abc': key 'train.steps' expects an integer, got 'abc'"));
    CHECK(starts_with(parse_error(base, {"train.seed=abc"}),
                      "override 'train.seed=abc': key 'train.seed' expects an integer, got 'abc'"));
    CHECK(starts_with(parse_error(base, {"train.steps="}),
                      "override 'train.steps=': key 'train.steps' expects an integer, got null"));
    CHECK(starts_with(parse_error(base, {"model=5"}),
                      "override 'model=5': section 'model' must be a mapping"));
  }
  SECTION("errors in the file still point at the file") {
    CHECK(starts_with(parse_error("train:\n  steps: abc\n", {"train.seed=3"}),
                      "configs/x.yaml:2: key 'train.steps'"));
  }
}

TEST_CASE("recipe: TrainConfig::validate errors surface with the source", "[recipe]") {
  CHECK_THAT(
      parse_error("parallel:\n  tp: 3\n"),
      Catch::StartsWith("configs/x.yaml: ") && Catch::Contains("not divisible by parallel.tp=3"));
  CHECK_THAT(parse_error("model:\n  num_hidden_layers: 2\nparallel:\n  pp: 4\n"),
             Catch::StartsWith("configs/x.yaml: ") &&
                 Catch::Contains("4 pipeline stages but only 2 layers"));
  CHECK_THAT(
      parse_error("parallel:\n  pp: 2\n  schedule: interleaved_1f1b\n  virtual_stages: 2\n"
                  "train:\n  grad_accum: 3\n"),
      Catch::StartsWith("configs/x.yaml: ") && Catch::Contains("parallel.micro_batches (3)"));
  CHECK_THAT(
      parse_error("parallel:\n  schedule: zigzag\n"),
      Catch::Contains("parallel.schedule 'zigzag' is not one of gpipe, 1f1b, interleaved_1f1b"));
  CHECK_THAT(parse_error("parallel:\n  virtual_stages: 2\n"),
             Catch::Contains("needs parallel.pp > 1"));
  CHECK_THAT(parse_error("train:\n  kernels: turbo\n"),
             Catch::StartsWith("configs/x.yaml: ") &&
                 Catch::Contains("train.kernels 'turbo' is not one of fused, reference"));
  CHECK_THAT(parse_error("optim:\n  fused: maybe\n"),
             Catch::StartsWith("configs/x.yaml:2: key 'optim.fused'"));
  CHECK_THAT(parse_error("model:\n  hidden_size: 130\n  num_attention_heads: 4\n"),
             Catch::StartsWith("configs/x.yaml: ") && Catch::Contains("model.hidden_size") &&
                 Catch::Contains("num_attention_heads"));
  CHECK_THAT(parse_error("data:\n  seq_len: 4096\n"),
             Catch::StartsWith("configs/x.yaml: ") && Catch::Contains("max_position_embeddings"));
  CHECK_THAT(parse_error("", {"train.steps=0"}),
             Catch::StartsWith("configs/x.yaml: ") && Catch::Contains("train.steps"));
}

TEST_CASE("recipe: load_recipe reads files and resolves hf_config", "[recipe]") {
  TempDir dir("hf");
  write_file(dir.path / "models" / "config.json",
             R"({"vocab_size": 512, "hidden_size": 96, "intermediate_size": 256,
                 "num_hidden_layers": 5, "num_attention_heads": 6, "num_key_value_heads": 3,
                 "rms_norm_eps": 1e-6, "max_position_embeddings": 1024,
                 "tie_word_embeddings": true, "architectures": ["LlamaForCausalLM"]})");
  write_file(dir.path / "configs" / "run.yaml",
             "model:\n"
             "  num_hidden_layers: 7\n"
             "  hf_config: ../models/config.json\n"
             "train:\n"
             "  steps: 3\n");

  SECTION("relative to the recipe's directory; other model keys override it") {
    const TrainConfig c = dst::load_recipe((dir.path / "configs" / "run.yaml").string());
    CHECK(c.model.vocab_size == 512);
    CHECK(c.model.hidden_size == 96);
    CHECK(c.model.num_attention_heads == 6);
    CHECK(c.model.num_key_value_heads == 3);
    CHECK(c.model.tie_word_embeddings);
    CHECK(c.model.num_hidden_layers == 7);  // recipe key wins over config.json
    CHECK(c.train.steps == 3);
  }
  SECTION("absolute path, and overrides on top") {
    const std::string abs = (dir.path / "models" / "config.json").string();
    write_file(dir.path / "abs.yaml", "model:\n  hf_config: " + abs + "\n");
    const TrainConfig c = dst::load_recipe(
        (dir.path / "abs.yaml").string(),
        {"model.hidden_size=48", "model.num_attention_heads=4", "model.num_key_value_heads=2"});
    CHECK(c.model.vocab_size == 512);
    CHECK(c.model.hidden_size == 48);
    CHECK(c.model.num_attention_heads == 4);
  }
  SECTION("a missing hf_config names the recipe line and the key") {
    const fs::path recipe = dir.path / "configs" / "bad.yaml";
    write_file(recipe, "train:\n  steps: 3\nmodel:\n  hf_config: nope/config.json\n");
    const std::string message = config_error_of([&] { dst::load_recipe(recipe.string()); });
    CHECK_THAT(message, Catch::StartsWith(recipe.string() + ":4: key 'model.hf_config'") &&
                            Catch::Contains("nope/config.json"));
  }
  SECTION("a missing recipe file") {
    const std::string path = (dir.path / "missing.yaml").string();
    CHECK_THAT(config_error_of([&] { dst::load_recipe(path); }),
               Catch::StartsWith(path + ": cannot open recipe"));
    CHECK_THAT(config_error_of([&] { dst::load_recipe(dir.path.string()); }),
               Catch::StartsWith(dir.path.string() + ": cannot open recipe"));
  }
  SECTION("errors from a file name the file") {
    const fs::path recipe = dir.path / "typo.yaml";
    write_file(recipe, "model:\n  hidden_size: 64\n  hiden_size: 64\n");
    CHECK_THAT(config_error_of([&] { dst::load_recipe(recipe.string()); }),
               Catch::StartsWith(recipe.string() + ":3: unknown key 'model.hiden_size'"));
  }
}

TEST_CASE("recipe: recipe_to_yaml round-trips", "[recipe]") {
  TrainConfig original = parse_recipe(kFullRecipe, "full.yaml");
  original.optim.lr = 3e-4 + 1e-19;  // not exactly representable in few digits
  original.optim.weight_decay = 0.1 / 3.0;
  original.model.rope_theta = 1e6;
  original.train.output_dir = "null";  // strings that look like YAML specials stay strings
  original.data.val_path = "";
  original.comm.timeout_s = 1.0 / 7.0;

  const std::string yaml = dst::recipe_to_yaml(original);
  CHECK_THAT(yaml, Catch::Contains("type: linear") && Catch::Contains("name: adamw") &&
                       !Catch::Contains("hf_config") && !Catch::Contains("betas"));
  const TrainConfig c = parse_recipe(yaml, "roundtrip.yaml");
  CHECK(c.model.vocab_size == original.model.vocab_size);
  CHECK(c.model.hidden_size == original.model.hidden_size);
  CHECK(c.model.intermediate_size == original.model.intermediate_size);
  CHECK(c.model.num_hidden_layers == original.model.num_hidden_layers);
  CHECK(c.model.num_attention_heads == original.model.num_attention_heads);
  CHECK(c.model.num_key_value_heads == original.model.num_key_value_heads);
  CHECK(c.model.rms_norm_eps == original.model.rms_norm_eps);
  CHECK(c.model.rope_theta == original.model.rope_theta);
  CHECK(c.model.max_position_embeddings == original.model.max_position_embeddings);
  CHECK(c.model.tie_word_embeddings == original.model.tie_word_embeddings);
  CHECK(c.model.initializer_range == original.model.initializer_range);
  CHECK(c.parallel.dp == original.parallel.dp);
  CHECK(c.parallel.tp == original.parallel.tp);
  CHECK(c.parallel.pp == original.parallel.pp);
  CHECK(c.data_parallel.bucket_mb == original.data_parallel.bucket_mb);
  CHECK(c.data_parallel.zero_stage == original.data_parallel.zero_stage);
  CHECK(c.optim.lr == original.optim.lr);
  CHECK(c.optim.beta1 == original.optim.beta1);
  CHECK(c.optim.beta2 == original.optim.beta2);
  CHECK(c.optim.eps == original.optim.eps);
  CHECK(c.optim.weight_decay == original.optim.weight_decay);
  CHECK(c.optim.grad_clip == original.optim.grad_clip);
  CHECK(c.schedule.type == original.schedule.type);
  CHECK(c.schedule.warmup_steps == original.schedule.warmup_steps);
  CHECK(c.schedule.min_lr == original.schedule.min_lr);
  CHECK(c.data.train_path == original.data.train_path);
  CHECK(c.data.val_path == original.data.val_path);
  CHECK(c.data.val_fraction == original.data.val_fraction);
  CHECK(c.data.seq_len == original.data.seq_len);
  CHECK(c.data.tokenizer == original.data.tokenizer);
  CHECK(c.train.steps == original.train.steps);
  CHECK(c.train.micro_batch_size == original.train.micro_batch_size);
  CHECK(c.train.grad_accum == original.train.grad_accum);
  CHECK(c.train.seed == original.train.seed);
  CHECK(c.train.log_every == original.train.log_every);
  CHECK(c.train.eval_every == original.train.eval_every);
  CHECK(c.train.eval_batches == original.train.eval_batches);
  CHECK(c.train.output_dir == original.train.output_dir);
  CHECK(c.train.threads == original.train.threads);
  CHECK(c.train.log_level == original.train.log_level);
  CHECK(c.comm.backend == original.comm.backend);
  CHECK(c.comm.timeout_s == original.comm.timeout_s);
  // Emitting again gives the same text.
  CHECK(dst::recipe_to_yaml(c) == yaml);

  // The defaults round-trip too.
  const TrainConfig defaults;
  const TrainConfig d = parse_recipe(dst::recipe_to_yaml(defaults), "defaults.yaml");
  CHECK(d.model.rms_norm_eps == defaults.model.rms_norm_eps);
  CHECK(d.optim.eps == defaults.optim.eps);
  CHECK(d.schedule.type == defaults.schedule.type);
  CHECK(d.data.train_path.empty());
  CHECK(dst::recipe_to_yaml(d) == dst::recipe_to_yaml(defaults));
}

TEST_CASE("recipe: precision.loss_scaler is a nested mapping", "[recipe]") {
  const TrainConfig c = parse_recipe(
      "precision:\n  param_dtype: fp16\n  loss_scaler:\n    initial_scale: 1024\n"
      "    growth_interval: 100\n    backoff_factor: 0.25\n",
      "fp16.yaml");
  CHECK(c.precision.param_dtype == "fp16");
  CHECK(c.precision.loss_scaler.initial_scale == 1024);
  CHECK(c.precision.loss_scaler.growth_interval == 100);
  CHECK(c.precision.loss_scaler.backoff_factor == 0.25);
  CHECK(c.precision.loss_scaler.growth_factor == 2.0);  // default kept
  const TrainConfig overridden =
      parse_recipe("precision:\n  param_dtype: fp16\n", "fp16.yaml",
                   {"precision.loss_scaler.min_scale=4", "precision.loss_scaler.initial_scale=8"});
  CHECK(overridden.precision.loss_scaler.min_scale == 4);
  CHECK(overridden.precision.loss_scaler.initial_scale == 8);
  const TrainConfig round_trip = parse_recipe(dst::recipe_to_yaml(c), "again.yaml");
  CHECK(round_trip.precision.loss_scaler.initial_scale == 1024);
  CHECK(round_trip.precision.loss_scaler.growth_interval == 100);

  CHECK(starts_with(parse_error("precision:\n  loss_scaler:\n    initial: 5\n"),
                    "configs/x.yaml:3: unknown key 'precision.loss_scaler.initial' (known: "
                    "initial_scale, growth_factor, backoff_factor, growth_interval, min_scale, "
                    "max_scale)"));
  CHECK(starts_with(parse_error("precision:\n  loss_scaler: 5\n"),
                    "configs/x.yaml:2: 'precision.loss_scaler' must be a mapping"));
  CHECK(starts_with(parse_error("precision:\n  loss_scaler:\n    growth_factor: 0.5\n"),
                    "configs/x.yaml: precision.loss_scaler.growth_factor must be > 1 (got 0.5)"));
}

TEST_CASE("recipe: model-parallel keys and their bad values", "[recipe]") {
  const TrainConfig c = parse_recipe(
      "model:\n  num_hidden_layers: 4\nparallel:\n  pp: 2\n  layers_per_stage: [3, 1]\n"
      "  activation_checkpointing: true\n  micro_batches: 4\n",
      "mp.yaml");
  CHECK(c.model_parallel.layers_per_stage == std::vector<int64_t>{3, 1});
  CHECK(c.model_parallel.activation_checkpointing == 1);
  CHECK(c.train.grad_accum == 4);
  CHECK(parse_recipe("parallel:\n  activation_checkpointing: 2\n", "k.yaml")
            .model_parallel.activation_checkpointing == 2);

  CHECK_THAT(parse_error("model:\n  num_hidden_layers: 4\nparallel:\n  pp: 2\n"
                         "  layers_per_stage: [3, 2]\n"),
             Catch::StartsWith("configs/x.yaml: ") &&
                 Catch::Contains("parallel.layers_per_stage sums to 5 but the model has 4 layers"));
  CHECK_THAT(parse_error("model:\n  num_hidden_layers: 4\nparallel:\n  pp: 2\n"
                         "  layers_per_stage: [4]\n"),
             Catch::Contains("parallel.layers_per_stage has 1 entries, expected"));
  CHECK_THAT(parse_error("parallel:\n  layers_per_stage: 3\n"),
             Catch::StartsWith("configs/x.yaml:2: key 'parallel.layers_per_stage'"));
  CHECK_THAT(parse_error("parallel:\n  activation_checkpointing: -1\n"),
             Catch::Contains("parallel.activation_checkpointing must be >= 0"));
  CHECK_THAT(parse_error("parallel:\n  sequence_parallel: true\n"),
             Catch::Contains("parallel.sequence_parallel is not implemented"));
  // Tied embeddings across pipeline stages are supported (the last stage keeps a copy).
  CHECK(parse_recipe("model:\n  tie_word_embeddings: true\nparallel:\n  pp: 2\n", "ok")
            .model.tie_word_embeddings);
}

TEST_CASE("recipe: checkpoint keys and their bad values", "[recipe]") {
  const TrainConfig c = parse_recipe(
      "checkpoint:\n  every_steps: 100\n  keep_last: 3\n  async: true\n  at_end: false\n"
      "  encryption:\n    key_file: secrets/ckpt.key\ntrain:\n  resume: latest\n"
      "  init_from: models/base\n",
      "ok");
  CHECK(c.checkpoint.every_steps == 100);
  CHECK(c.checkpoint.keep_last == 3);
  CHECK(c.checkpoint.async);
  CHECK(!c.checkpoint.at_end);
  CHECK(c.checkpoint.encryption.key_file == "secrets/ckpt.key");
  CHECK(c.train.resume == "latest");
  CHECK(c.train.init_from == "models/base");
  CHECK(parse_recipe("checkpoint:\n  encryption:\n    key_env: DST_KEY\n", "ok")
            .checkpoint.encryption.key_env == "DST_KEY");
  CHECK_THAT(parse_error("checkpoint:\n  every_steps: -1\n"),
             Catch::StartsWith("configs/x.yaml: ") &&
                 Catch::Contains("checkpoint.every_steps must be >= 0"));
  CHECK_THAT(parse_error("checkpoint:\n  keep_last: -2\n"),
             Catch::Contains("checkpoint.keep_last must be >= 0"));
  CHECK_THAT(parse_error("checkpoint:\n  encryption:\n    key_file: a\n    key_env: B\n"),
             Catch::Contains("set key_file or key_env, not both"));
  CHECK_THAT(parse_error("checkpoint:\n  async: maybe\n"),
             Catch::StartsWith("configs/x.yaml:2: key 'checkpoint.async' expects a boolean"));
  CHECK_THAT(parse_error("checkpoint:\n  encryption:\n    key: abc\n"),
             Catch::Contains("unknown key 'checkpoint.encryption.key'"));
}

TEST_CASE("recipe: named mesh axes, parallel.dp_shard as another name of parallel.dp", "[recipe]") {
  const TrainConfig c =
      dst::parse_recipe("parallel:\n  dp_shard: 2\n  dp_replicate: 3\n", "configs/x.yaml");
  CHECK(c.parallel.dp == 2);
  CHECK(c.parallel.dp_replicate == 3);
  CHECK(c.parallel.data_parallel_size() == 6);
  // Written back under the one name, and read back the same.
  const std::string yaml = dst::recipe_to_yaml(c);
  CHECK(yaml.find("dp_shard") == std::string::npos);
  const TrainConfig again = dst::parse_recipe(yaml, "round-trip");
  CHECK(again.parallel.dp == 2);
  CHECK(again.parallel.dp_replicate == 3);
  CHECK_THAT(parse_error("parallel:\n  dp: 2\n  dp_shard: 2\n"),
             Catch::StartsWith("configs/x.yaml:3: key 'parallel.dp_shard' cannot be combined with "
                               "'parallel.dp'"));
  CHECK_THAT(parse_error("parallel:\n  dp_replicate: 0\n"),
             Catch::Contains("parallel.dp_replicate must be at least 1, got 0"));
  CHECK_THAT(parse_error("parallel:\n  ep: 2\n"),
             Catch::Contains("parallel.ep = 2 must divide parallel.dp (dp_shard) = 1"));
  CHECK_THAT(parse_error("parallel:\n  dp: 2\n  ep: 2\n"),
             Catch::Contains("parallel.ep = 2: expert parallelism needs a model with routed "
                             "experts"));
}

TEST_CASE("recipe: a DeepSeek model in YAML round-trips; Llama recipes leave its keys out",
          "[recipe]") {
  const std::string text = R"(model:
  model_type: deepseek_v3
  hidden_size: 64
  num_attention_heads: 4
  num_key_value_heads: 4
  q_lora_rank: 32
  kv_lora_rank: 16
  qk_nope_head_dim: 16
  qk_rope_head_dim: 16
  v_head_dim: 32
  moe_intermediate_size: 32
  n_routed_experts: 8
  n_shared_experts: 1
  num_experts_per_tok: 2
  first_k_dense_replace: 1
  n_group: 2
  topk_group: 1
  topk_method: noaux_tc
  scoring_func: sigmoid
  norm_topk_prob: true
  routed_scaling_factor: 2.5
  rope_scaling: {rope_type: yarn, factor: 4.0, mscale_all_dim: 0.707}
)";
  const TrainConfig c = parse_recipe(text, "ds.yaml");
  CHECK(c.model.is_moe_layer(1));
  CHECK(c.model.rope_scaling.factor == 4.0);
  const std::string yaml = dst::recipe_to_yaml(c);
  const TrainConfig back = parse_recipe(yaml, "roundtrip.yaml");
  CHECK(model_config_to_hf_json(back.model) == model_config_to_hf_json(c.model));
  CHECK_THAT(dst::recipe_to_yaml(parse_recipe("model: {hidden_size: 64}\n", "l.yaml")),
             Catch::Contains("model_type: llama") && !Catch::Contains("kv_lora_rank") &&
                 !Catch::Contains("rope_scaling"));
  std::string bad = text;
  bad.replace(bad.find("topk_group: 1"), 13, "topk_group: 3");
  CHECK_THROWS_WITH(parse_recipe(bad, "ds.yaml"),
                    Catch::Contains("model.topk_group (3) must be in 1..2"));
  // Expert parallelism splits the routed experts evenly.
  CHECK_THAT(parse_error(text + "parallel: {dp: 3, ep: 3}\n"),
             Catch::Contains("model.n_routed_experts (8) is not divisible by parallel.ep=3"));
  CHECK(parse_recipe(text + "parallel: {dp: 4, ep: 4}\n", "ds.yaml").parallel.ep == 4);
}

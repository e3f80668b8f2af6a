// The components a training run is made of, each on its own: the run policies (evaluation,
// early stopping, checkpoint cadence), the training data, the step-metrics recorder and rank 0's
// run outputs. Trainer::run() composes them; examples/custom_trainer does too.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/synthetic_corpus.h"
#include "deepseek_train/train/run_outputs.h"
#include "deepseek_train/train/run_policy.h"
#include "deepseek_train/train/step_metrics.h"
#include "deepseek_train/train/training_data.h"

using namespace dst;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("dst_test_run_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("run policy: evaluation every eval_every steps and after the last", "[metrics]") {
  TrainOptions train;
  train.steps = 10;
  train.eval_every = 4;
  std::vector<int64_t> due;
  for (int64_t step = 1; step <= 10; ++step)
    if (evaluation_due(train, step)) due.push_back(step);
  CHECK(due == std::vector<int64_t>{4, 8, 10});
  train.eval_every = 0;
  CHECK_FALSE(evaluation_due(train, 4));
  CHECK(evaluation_due(train, 10));
}

TEST_CASE("run policy: early stopping after patience evaluations without improvement",
          "[metrics]") {
  TrainOptions train;
  train.early_stopping_patience = 2;
  train.early_stopping_min_delta = 0.1;
  EarlyStopping stopping(train, 5.0);
  auto v = stopping.observe(10, 4.0);  // improves by more than min_delta
  CHECK(v.new_best);
  CHECK_FALSE(v.stop);
  v = stopping.observe(20, 3.95);  // better, but not by min_delta: counts as no improvement
  CHECK_FALSE(v.new_best);
  CHECK_FALSE(v.stop);
  v = stopping.observe(30, 4.5);
  CHECK(v.stop);
  CHECK(stopping.best_loss() == 4.0);
  CHECK(stopping.best_step() == 10);
  // Patience 0 never stops.
  train.early_stopping_patience = 0;
  EarlyStopping never(train, 1.0);
  for (int64_t step = 1; step < 20; ++step) CHECK_FALSE(never.observe(step, 2.0).stop);
  CHECK(never.best_step() == 0);
}

TEST_CASE("run policy: which checkpoint a step saves", "[metrics]") {
  CheckpointOptions options;
  options.every_steps = 5;
  options.at_end = true;
  options.keep_best = false;
  CHECK(checkpoint_due(options, 3, false, false) == CheckpointSave::kNone);
  CHECK(checkpoint_due(options, 5, false, false) == CheckpointSave::kRegular);
  CHECK(checkpoint_due(options, 7, true, false) == CheckpointSave::kRegular);  // run ends
  CHECK(checkpoint_due(options, 7, false, true) == CheckpointSave::kNone);     // best not kept
  options.keep_best = true;
  CHECK(checkpoint_due(options, 7, false, true) == CheckpointSave::kBest);
  CHECK(checkpoint_due(options, 10, true, true) == CheckpointSave::kBest);  // best wins
  options.at_end = false;
  options.every_steps = 0;
  CHECK(checkpoint_due(options, 7, true, false) == CheckpointSave::kNone);
}

TEST_CASE("training data: a text corpus, its validation split and each rank's eval batches",
          "[metrics]") {
  TempDir dir("data");
  std::vector<std::string> documents;
  for (int i = 0; i < 40; ++i) documents.push_back("document number " + std::to_string(i) + ".");
  const std::string corpus = (dir.path / "corpus.txt").string();
  write_text_corpus(corpus, documents);
  DataOptions data;
  data.train_path = corpus;
  data.val_fraction = 0.25;
  data.seq_len = 8;
  const TrainingData loaded = load_training_data(data, 259);
  REQUIRE(loaded.train);
  REQUIRE(loaded.validation);
  CHECK(loaded.train->seq_len() == 8);
  CHECK(loaded.train->size() > 2 * loaded.validation->size());
  CHECK(loaded.validation->size() > 0);
  // Two ranks take different rows of the same walk; batches are [rows, seq_len].
  const auto rank0 = validation_batches(*loaded.validation, 2, 1, 0, 2);
  const auto rank1 = validation_batches(*loaded.validation, 2, 1, 1, 2);
  REQUIRE(rank0.size() == rank1.size());
  CHECK(rank0[0].input_ids.sizes() == torch::IntArrayRef({1, 8}));
  CHECK_FALSE(torch::equal(rank0[0].input_ids, rank1[0].input_ids));

  CHECK_THROWS_WITH(load_training_data(data, 100),
                    Catch::Contains("has more ids than model.vocab_size 100"));
  data.val_fraction = 0;
  CHECK_THROWS_WITH(load_training_data(data, 259),
                    Catch::Contains("no validation documents (set data.val_fraction > 0"));
  CHECK_THROWS_WITH(load_training_data(DataOptions{}, 259),
                    Catch::Contains("data.train_path or data.prepared is required"));
}

TEST_CASE("step metrics: the row of a step and the throughput of the logging window", "[metrics]") {
  StepMetricsRecorder recorder(comm::make_local_communicator(), 10, 0, 1000.0, 6.0e6);
  StepResult result;
  result.step = 1;
  result.loss = 2.5;
  result.tokens = 100;
  result.seconds = 0.5;
  result.comm_bytes = 64;
  const StepMetrics first = recorder.record(result, 0);
  CHECK(first.step == 1);
  CHECK(first.total_steps == 10);
  CHECK(first.tokens_per_s == 200.0);
  CHECK(first.mfu == Approx(200.0 * 6 * 1000 / 6.0e6));
  CHECK(first.peak_rss_mb > 0);
  CHECK(first.peak_rss_mb_per_rank.size() == 1);
  result.step = 2;
  result.seconds = 1.5;
  const StepMetrics second = recorder.record(result, 1);
  CHECK(second.skipped_steps == 1);
  // The window covers both steps (200 tokens in 2 s), then starts again.
  CHECK(recorder.windowed(second).tokens_per_s == 100.0);
  result.step = 3;
  result.seconds = 1.0;
  CHECK(recorder.windowed(recorder.record(result, 1)).tokens_per_s == 100.0);
}

TEST_CASE("run outputs: metrics.jsonl rows, a resumed run's rows replaced, an unusable directory",
          "[metrics]") {
  TempDir dir("outputs");
  TrainOptions train;
  train.output_dir = (dir.path / "run").string();
  train.steps = 3;
  train.progress = "lines";
  train.prometheus_every = 1;
  auto world = comm::make_local_communicator();
  const Logger quiet(0, 1, LogLevel::kWarn);
  StepMetricsRecorder recorder(world, 3, 0, 1000.0, 0.0);
  {
    RunOutputs outputs(train, *world, -1, quiet);
    outputs.write_eval(0, 5.0);
    for (int64_t step = 1; step <= 3; ++step) {
      StepResult result;
      result.step = step;
      result.tokens = 10;
      result.seconds = 0.1;
      outputs.write_step(recorder.record(result, 0), recorder);
    }
    outputs.finish();
  }
  const fs::path metrics = dir.path / "run" / "metrics.jsonl";
  REQUIRE(read_lines(metrics).size() == 4);
  CHECK(fs::exists(dir.path / "run" / "metrics.prom"));
  // Resumed from step 1: the rows of steps 2 and 3 go (they are trained again).
  { RunOutputs resumed(train, *world, 1, quiet); }
  const auto kept = read_lines(metrics);
  REQUIRE(kept.size() == 2);
  CHECK(nlohmann::json::parse(kept[1])["step"] == 1);
  // A fresh run starts a new file.
  { RunOutputs fresh(train, *world, -1, quiet); }
  CHECK(read_lines(metrics).empty());
  // An output directory under a regular file: a DataError naming the path.
  std::ofstream(dir.path / "file") << "x";
  train.output_dir = (dir.path / "file" / "run").string();
  CHECK_THROWS_AS(RunOutputs(train, *world, -1, quiet), DataError);
  CHECK_THROWS_WITH(RunOutputs(train, *world, -1, quiet), Catch::Contains("metrics file"));
}

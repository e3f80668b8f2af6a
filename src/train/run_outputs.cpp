#include "deepseek_train/train/run_outputs.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"

namespace dst {

void drop_metrics_after(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!row.is_object() || !row.contains("step") || !row["step"].is_number_integer()) continue;
    if (row["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  write_file_atomically(path, kept);
}

RunOutputs::RunOutputs(const TrainOptions& train, comm::Communicator& world, int64_t resumed_step,
                       const Logger& logger)
    : train_(train), logger_(logger) {
  std::string failure;
  if (world.rank() == 0) {
    try {
      open(resumed_step);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  at::Tensor failed = at::full({1}, failure.empty() ? 0.0 : 1.0, at::kDouble);
  world.all_reduce(failed, comm::ReduceOp::kMax)->wait();
  if (!failure.empty()) throw DataError(failure);
  DST_CHECK(failed.item<double>() == 0.0, DataError,
            "rank 0 cannot write its outputs under train.output_dir '" << train.output_dir
                                                                       << "' (see its error)");
}

void RunOutputs::open(int64_t resumed_step) {
  const std::filesystem::path out(train_.output_dir);
  const std::string metrics_path = (out / "metrics.jsonl").string();
  check_output_file_writable(metrics_path, "metrics file");
  if (resumed_step < 0) {
    std::filesystem::remove(metrics_path);
  } else {
    drop_metrics_after(metrics_path, resumed_step);
  }
  metrics_ = std::make_unique<MetricsWriter>(metrics_path);
  if (train_.prometheus_every > 0)
    prometheus_ = std::make_unique<PrometheusTextfile>(
        (out / "metrics.prom").string(),
        PrometheusTextfile::Labels{{"run", out.filename().string()}});
  const bool terminal = isatty(fileno(stderr)) != 0;
  if (train_.progress == "bar" || (train_.progress == "auto" && terminal))
    progress_ = std::make_unique<ProgressDisplay>(stderr, true);
}

void RunOutputs::write_eval(int64_t step, double eval_loss) {
  if (metrics_) metrics_->write_eval(step, eval_loss);
  if (prometheus_) prometheus_->write_eval(step, eval_loss);
  logger_.info("step " + std::to_string(step) + "/" + std::to_string(train_.steps) + " | eval " +
               std::to_string(eval_loss));
}

void RunOutputs::write_step(const StepMetrics& m, StepMetricsRecorder& recorder) {
  const bool last = m.step == train_.steps;
  if (metrics_) metrics_->write(m);
  if (prometheus_ && (last || m.step % train_.prometheus_every == 0)) prometheus_->write(m);
  const double eta = recorder.eta_seconds(m.step);
  if (progress_) progress_->update(m, eta);
  if (m.step == 1 || last || m.step % train_.log_every == 0 || m.eval_loss) {
    const StepMetrics shown = recorder.windowed(m);
    // With a bar on the terminal, only evaluations get a line of their own.
    if (!progress_ || m.eval_loss) {
      clear_bar();
      logger_.info(format_progress_line(shown, eta));
    }
  }
}

void RunOutputs::clear_bar() {
  if (progress_) progress_->clear();
}

void RunOutputs::finish() {
  if (progress_) progress_->finish();
}

}  // namespace dst

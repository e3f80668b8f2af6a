// Rank 0's outputs of a training run under train.output_dir: metrics.jsonl (one row per step and
// evaluation), metrics.prom (Prometheus textfile, every train.prometheus_every steps), the
// terminal progress bar (train.progress) and the progress lines every train.log_every steps.
// Every rank creates it together, so an output directory rank 0 cannot write fails every rank at
// once, with rank 0's reason, before the first step.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/core/log.h"
#include "deepseek_train/train/metrics.h"
#include "deepseek_train/train/prometheus_textfile.h"
#include "deepseek_train/train/step_metrics.h"
#include "deepseek_train/train/train_config.h"

namespace dst {

class RunOutputs {
 public:
  // Collective over `world`. `resumed_step` >= 0: a resumed run continues metrics.jsonl without
  // its rows after that step (they are trained again); < 0: a new metrics.jsonl. DataError on
  // every rank when rank 0 cannot write there.
  RunOutputs(const TrainOptions& train, comm::Communicator& world, int64_t resumed_step,
             const Logger& logger);
  // An evaluation outside a step (the untrained model, or the resumed one): written and logged.
  void write_eval(int64_t step, double eval_loss);
  // A step's row: metrics.jsonl, Prometheus when due, the bar; and a progress line with the
  // window's throughput from `recorder` on the first and last step, every log_every steps and
  // with every evaluation (with a bar on the terminal, only the evaluations).
  void write_step(const StepMetrics& metrics, StepMetricsRecorder& recorder);
  // Removes the bar before others print a line (checkpoint saves, early stopping).
  void clear_bar();
  // Ends the bar's line.
  void finish();

 private:
  TrainOptions train_;
  Logger logger_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<PrometheusTextfile> prometheus_;
  std::unique_ptr<ProgressDisplay> progress_;
  void open(int64_t resumed_step);  // rank 0
};

// Rewrites a metrics.jsonl without the rows of steps after `step`. Lines that are not JSON
// objects with a step (a torn last line) are dropped too.
void drop_metrics_after(const std::string& path, int64_t step);

}  // namespace dst

// Run metrics: the per-step record, its JSONL writer (metrics.jsonl, one object per line, flushed
// per line so a crash loses at most the current step) and the rank-0 progress line. Torch-free.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <optional>
#include <string>

namespace dst {

struct StepMetrics {
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  int64_t tokens = 0;
  double tokens_per_s = 0.0;
  double step_time_s = 0.0;
  uint64_t comm_bytes = 0;
  double comm_wait_s = 0.0;
  double peak_rss_mb = 0.0;                          // this process's peak resident memory so far
  std::map<std::string, uint64_t> comm_bytes_by_op;  // e.g. {"all_reduce": 55070208}
  std::optional<double> eval_loss;
  double loss_scale = 1.0;       // fp16 dynamic loss scale used by the step (1 otherwise)
  bool skipped = false;          // update skipped: non-finite gradients
  int64_t skipped_steps = 0;     // skipped so far in the run
  double pipeline_wait_s = 0.0;  // rank 0's wait on other pipeline stages (bubble + transfers)
};

class MetricsWriter {
 public:
  // Opens `path` for appending (creating parent directories). Throws DataError naming the path.
  explicit MetricsWriter(const std::string& path);
  void write(const StepMetrics& metrics);
  // An evaluation outside a training step (step 0: the untrained model): {"step", "eval_loss"}.
  void write_eval(int64_t step, double eval_loss);

 private:
  std::string path_;
  std::ofstream out_;
};

// "1h02m", "3m05s", "42s".
std::string format_duration(double seconds);
// "12.3k", "1.20M", "950".
std::string format_count(double value);
// "step 10/200 | loss 3.2100 | lr 1.00e-03 | grad-norm 0.850 | 12.3k tok/s | ETA 1m20s"
std::string format_progress_line(const StepMetrics& metrics, double eta_seconds);

}  // namespace dst

// Run metrics: the per-step record, its JSONL writer (metrics.jsonl, one object per line, flushed
// per line so a crash loses at most the current step), model FLOP utilisation, the rank-0 progress
// line and the terminal progress bar. Torch-free.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "deepseek_train/privacy/privacy_options.h"

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
  double peak_rss_mb = 0.0;          // this process's peak resident memory so far
  double planned_peak_rss_mb = 0.0;  // the memory plan's peak for this rank (MiB); 0: unknown
  // On a GPU: the caching allocator's peak allocated and reserved device memory (MiB); 0 on CPU.
  double peak_device_allocated_mb = 0.0;
  double peak_device_reserved_mb = 0.0;
  double planned_peak_device_mb = 0.0;               // MemoryPlan::device_peak() on a GPU
  std::map<std::string, uint64_t> comm_bytes_by_op;  // e.g. {"all_reduce": 55070208}
  std::optional<double> eval_loss;
  double loss_scale = 1.0;       // fp16 dynamic loss scale used by the step (1 otherwise)
  bool skipped = false;          // update skipped: non-finite gradients
  int64_t skipped_steps = 0;     // skipped so far in the run
  double pipeline_wait_s = 0.0;  // rank 0's wait on other pipeline stages (bubble + transfers)
  double expert_load_max_over_mean = 0.0;  // MoE: StepResult's; 0 without MoE layers
  int64_t dropped_tokens = 0;
  double balance_loss = 0.0;  // MoE with moe.aux_loss_alpha: StepResult's; written when > 0
  std::optional<PrivacyReport> privacy;  // DP-SGD: epsilon, sample_rate, noise_multiplier, ...
  double mfu = 0.0;  // model FLOP utilisation, a fraction (0.312 = 31.2%); 0: unknown
  // Seconds waited per collective type, e.g. {"all_reduce": 0.02}.
  std::map<std::string, double> comm_wait_s_by_op;
  double peak_rss_mb_max = 0.0;              // max of peak_rss_mb over ranks; 0: unknown
  std::vector<double> peak_rss_mb_per_rank;  // peak_rss_mb of rank i at [i]; empty: unknown
};

// Model FLOPs per trained token: 6 * parameters (forward 2 * N multiply-adds of the dense matmuls,
// backward twice the forward). The attention score/value term (~12 * layers * hidden * seq_len
// per token) is left out, so MFU is slightly understated for long sequences.
double model_flops_per_token(int64_t parameters);

// Model FLOP utilisation: tokens_per_s * model_flops_per_token(parameters) / peak_flops, a
// fraction. `tokens_per_s` and `peak_flops` must cover the same devices (e.g. the global token rate
// and world_size * per-device peak FLOP/s). 0 when peak_flops or tokens_per_s is not positive.
double mfu(double tokens_per_s, int64_t parameters, double peak_flops);

// Creates the parent directories of output file `path` and checks a file can be created there
// (by creating and removing a probe file; works as root, unlike access()). Throws DataError, one
// line, "<what> '<path>': <reason>", naming the directory and strerror when it cannot.
void check_output_file_writable(const std::string& path, const std::string& what);

class MetricsWriter {
 public:
  // Opens `path` for appending (creating parent directories). Throws DataError naming the path
  // and the reason (e.g. "cannot create directory 'runs/x': Not a directory").
  explicit MetricsWriter(const std::string& path);
  // One JSON object per call. Always: step, loss, lr, grad_norm, tokens, tokens_per_s,
  // step_time_s, comm_bytes, comm_wait_s, peak_rss_mb, loss_scale, skipped, skipped_steps. When
  // set (non-zero / non-empty): pipeline_wait_s, comm_bytes_by_op, comm_wait_s_by_op, mfu,
  // peak_rss_mb_max, peak_rss_mb_per_rank (array), eval_loss + eval_perplexity.
  void write(const StepMetrics& metrics);
  // An evaluation outside a training step (step 0: the untrained model): {"step", "eval_loss"}.
  void write_eval(int64_t step, double eval_loss);

 private:
  void write_line(const std::string& line);

  std::string path_;
  std::ofstream out_;
};

// "1h02m", "3m05s", "42s".
std::string format_duration(double seconds);
// "12.3k", "1.20M", "950".
std::string format_count(double value);
// "step 10/200 | loss 3.2100 | lr 1.00e-03 | grad-norm 0.850 | 12.3k tok/s | ETA 1m20s"
// (" | MFU 31.2%" after tok/s when metrics.mfu > 0).
std::string format_progress_line(const StepMetrics& metrics, double eta_seconds);

// One terminal line, at most `width` columns (width <= 0: no limit), e.g.
//   [####................]  40/200 20% | loss 3.2100 | lr 1.00e-03 | 12.3k tok/s | MFU 31.2% |
//   ETA 1m20s   (one line; MFU only when > 0)
// When it does not fit, the bar narrows (to 5 cells), then fields are dropped in the order lr,
// MFU, tok/s, loss, ETA, and finally the line is cut. No newline, no control characters.
std::string format_progress_bar(const StepMetrics& metrics, double eta_seconds, int width);

// A progress bar redrawn in place on a terminal. On a terminal update() rewrites one line
// ("\r" + bar + clear-to-end-of-line) at most every `min_interval_s` and always on the last step
// (step >= total_steps), which also ends the line; line() prints a log line above the bar (erasing
// the bar, printing the text, redrawing the bar). Not on a terminal, update() does nothing and
// line() just prints the text: the caller keeps logging plain lines every log_every steps.
class ProgressDisplay {
 public:
  // width <= 0: the terminal's width (TIOCGWINSZ on `stream`, else $COLUMNS, else 80), minus one
  // column so the line never wraps. Typical: ProgressDisplay(stderr, isatty(fileno(stderr))).
  ProgressDisplay(std::FILE* stream, bool is_terminal, int width = 0, double min_interval_s = 0.2);
  ~ProgressDisplay();  // ends a bar line still shown (newline)
  ProgressDisplay(const ProgressDisplay&) = delete;
  ProgressDisplay& operator=(const ProgressDisplay&) = delete;

  void update(const StepMetrics& metrics, double eta_seconds);
  // Prints `text` and a newline; on a terminal the bar is erased first and redrawn below.
  void line(const std::string& text);
  // Erases the bar (no newline) so that someone else can print a line, e.g. through a Logger
  // writing to the same stream; the next update() redraws it regardless of min_interval_s.
  void clear();
  // Ends the bar line (newline) if one is shown; the next update() starts a new one.
  void finish();

  bool is_terminal() const { return is_terminal_; }
  // The columns a bar may use now.
  int width() const { return current_width(); }

 private:
  void draw(const std::string& bar);
  int current_width() const;

  std::FILE* stream_;
  bool is_terminal_;
  int width_;  // <= 0: follow the terminal's width
  double min_interval_s_;
  bool shown_ = false;      // a bar is on the current line
  bool force_draw_ = true;  // draw on the next update() regardless of the interval
  std::chrono::steady_clock::time_point last_draw_{};
  std::string bar_;  // the bar last drawn
};

}  // namespace dst

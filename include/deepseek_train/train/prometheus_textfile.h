// Run metrics as a Prometheus text-format file for node_exporter's textfile collector
// (--collector.textfile.directory; the file name must end in .prom). Each write() replaces the
// whole file atomically (temporary file beside it + rename), so the collector never reads half a
// file; the temporary's name ("<path>.tmp.<pid>") does not end in .prom and is ignored. Torch-free.
//
// Metrics (every sample carries the constructor's labels; "rank" and "op" are added where shown):
//   dstrain_step, dstrain_total_steps, dstrain_loss, dstrain_learning_rate, dstrain_grad_norm,
//   dstrain_tokens_per_second, dstrain_step_duration_seconds, dstrain_mfu (when > 0),
//   dstrain_peak_rss_bytes{rank} (when per-rank values are known),
//   dstrain_peak_rss_max_bytes (when known), dstrain_comm_bytes{op} and
//   dstrain_comm_wait_seconds{op} (last step, per collective), dstrain_skipped_steps_total
//   (counter), dstrain_eval_loss + dstrain_eval_step (the latest evaluation, kept across writes),
//   dstrain_last_update_timestamp_seconds (Unix time of the write).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "deepseek_train/train/metrics.h"

namespace dst {

class PrometheusTextfile {
 public:
  using Labels = std::map<std::string, std::string>;

  // Checks that label names are valid Prometheus label names, not reserved ("__" prefix) and not
  // "rank" or "op" (ConfigError), creates the parent directories and checks a file can be created
  // there (DataError naming the path and the reason, as MetricsWriter). Writes nothing yet.
  // Example: PrometheusTextfile("/var/lib/node_exporter/dstrain.prom", {{"run", "quickstart"}}).
  explicit PrometheusTextfile(std::string path, Labels labels = {});

  // Renders `metrics` (and the latest evaluation seen) and replaces the file atomically. Throws
  // IoError naming the path when the file cannot be written.
  void write(const StepMetrics& metrics);
  // Records an evaluation outside a training step (step 0: the untrained model) and rewrites the
  // file with the last step's metrics (or only the evaluation when there was no step yet).
  void write_eval(int64_t step, double eval_loss);

  // The file's contents for `metrics` at Unix time `unix_time_s`, without writing or recording.
  std::string render(const StepMetrics& metrics, double unix_time_s) const;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  Labels labels_;
  std::optional<StepMetrics> last_;  // the last write()'s metrics
  std::optional<double> eval_loss_;  // the latest evaluation
  int64_t eval_step_ = 0;
};

// Escapes a label value per the text exposition format: backslash, double quote, newline.
std::string prometheus_escape_label_value(const std::string& value);
// A sample value: shortest round-trip decimal, "NaN", "+Inf" or "-Inf".
std::string prometheus_format_value(double value);
// True for names matching [a-zA-Z_:][a-zA-Z0-9_:]*.
bool is_valid_prometheus_metric_name(const std::string& name);
// True for names matching [a-zA-Z_][a-zA-Z0-9_]*.
bool is_valid_prometheus_label_name(const std::string& name);

}  // namespace dst

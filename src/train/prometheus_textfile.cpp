#include "deepseek_train/train/prometheus_textfile.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <utility>
#include <vector>

#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"

namespace dst {

namespace {

constexpr double kBytesPerMb = 1024.0 * 1024.0;  // peak_rss_mb is in MiB (ru_maxrss / 1024)

bool is_name_char(char c, bool first, bool colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (colon && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

bool is_valid_name(const std::string& name, bool colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!is_name_char(name[i], i == 0, colon)) return false;
  return true;
}

// HELP text escaping: backslash and newline.
std::string escape_help(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

using Labels = PrometheusTextfile::Labels;
using Sample = std::pair<std::vector<std::pair<std::string, std::string>>, double>;

class Renderer {
 public:
  explicit Renderer(const Labels& labels) : labels_(labels) {}

  void family(const std::string& name, const char* type, const std::string& help,
              const std::vector<Sample>& samples) {
    DST_ASSERT(is_valid_prometheus_metric_name(name), name);
    if (samples.empty()) return;
    out_ += "# HELP " + name + " " + escape_help(help) + "\n";
    out_ += "# TYPE " + name + " " + type + "\n";
    for (const Sample& sample : samples) {
      out_ += name;
      std::string labels;
      auto add = [&](const std::string& key, const std::string& value) {
        labels += labels.empty() ? "{" : ",";
        labels += key + "=\"" + prometheus_escape_label_value(value) + "\"";
      };
      for (const auto& [key, value] : labels_) add(key, value);
      for (const auto& [key, value] : sample.first) add(key, value);
      if (!labels.empty()) labels += "}";
      out_ += labels + " " + prometheus_format_value(sample.second) + "\n";
    }
  }

  void gauge(const std::string& name, const std::string& help, double value) {
    family(name, "gauge", help, {Sample{{}, value}});
  }

  std::string take() { return std::move(out_); }

 private:
  const Labels& labels_;
  std::string out_;
};

double now_unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string prometheus_escape_label_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string prometheus_format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

bool is_valid_prometheus_metric_name(const std::string& name) { return is_valid_name(name, true); }

bool is_valid_prometheus_label_name(const std::string& name) { return is_valid_name(name, false); }

PrometheusTextfile::PrometheusTextfile(std::string path, Labels labels)
    : path_(std::move(path)), labels_(std::move(labels)) {
  for (const auto& [key, value] : labels_) {
    DST_CHECK(is_valid_prometheus_label_name(key) && key.rfind("__", 0) != 0, ConfigError,
              "prometheus textfile '" << path_ << "': invalid label name '" << key
                                      << "' (expected [a-zA-Z_][a-zA-Z0-9_]*, no '__' prefix)");
    DST_CHECK(key != "rank" && key != "op", ConfigError,
              "prometheus textfile '" << path_ << "': label name '" << key
                                      << "' is reserved for per-rank / per-collective samples");
  }
  check_output_file_writable(path_, "prometheus textfile");
}

std::string PrometheusTextfile::render(const StepMetrics& m, double unix_time_s) const {
  Renderer r(labels_);
  r.gauge("dstrain_step", "Last completed optimizer step.", static_cast<double>(m.step));
  r.gauge("dstrain_total_steps", "Optimizer steps the run is configured for.",
          static_cast<double>(m.total_steps));
  r.gauge("dstrain_loss", "Training loss of the last step.", m.loss);
  r.gauge("dstrain_learning_rate", "Learning rate used by the last step.", m.lr);
  r.gauge("dstrain_grad_norm", "Global gradient norm of the last step (before clipping).",
          m.grad_norm);
  r.gauge("dstrain_tokens_per_second", "Training throughput in tokens per second.", m.tokens_per_s);
  r.gauge("dstrain_step_duration_seconds", "Wall time of the last step in seconds.", m.step_time_s);
  if (m.mfu > 0)
    r.gauge("dstrain_mfu", "Model FLOP utilisation (6 * parameters * tokens/s / peak FLOP/s).",
            m.mfu);

  std::vector<Sample> per_rank;
  double max_mb = std::max(m.peak_rss_mb_max, m.peak_rss_mb);
  for (size_t rank = 0; rank < m.peak_rss_mb_per_rank.size(); ++rank) {
    per_rank.push_back(
        {{{"rank", std::to_string(rank)}}, m.peak_rss_mb_per_rank[rank] * kBytesPerMb});
    max_mb = std::max(max_mb, m.peak_rss_mb_per_rank[rank]);
  }
  r.family("dstrain_peak_rss_bytes", "gauge", "Peak resident set size of each rank in bytes.",
           per_rank);
  if (max_mb > 0)
    r.gauge("dstrain_peak_rss_max_bytes",
            "Largest peak resident set size over the ranks known (this process's otherwise).",
            max_mb * kBytesPerMb);

  std::vector<Sample> bytes, waits;
  for (const auto& [op, value] : m.comm_bytes_by_op)
    bytes.push_back({{{"op", op}}, static_cast<double>(value)});
  for (const auto& [op, value] : m.comm_wait_s_by_op) waits.push_back({{{"op", op}}, value});
  r.family("dstrain_comm_bytes", "gauge", "Bytes moved by collectives in the last step, per type.",
           bytes);
  r.family("dstrain_comm_wait_seconds", "gauge",
           "Seconds waited on collectives in the last step, per type.", waits);

  r.family("dstrain_skipped_steps_total", "counter",
           "Optimizer updates skipped for non-finite gradients.",
           {Sample{{}, static_cast<double>(m.skipped_steps)}});

  const std::optional<double> eval_loss = m.eval_loss ? m.eval_loss : eval_loss_;
  if (eval_loss) {
    r.gauge("dstrain_eval_loss", "Validation loss of the latest evaluation.", *eval_loss);
    r.gauge("dstrain_eval_step", "Step of the latest evaluation.",
            static_cast<double>(m.eval_loss ? m.step : eval_step_));
  }
  r.gauge("dstrain_last_update_timestamp_seconds", "Unix time this file was written.", unix_time_s);
  return r.take();
}

void PrometheusTextfile::write(const StepMetrics& metrics) {
  if (metrics.eval_loss) {
    eval_loss_ = metrics.eval_loss;
    eval_step_ = metrics.step;
  }
  last_ = metrics;
  write_file_atomically(path_, render(metrics, now_unix_seconds()));
}

void PrometheusTextfile::write_eval(int64_t step, double eval_loss) {
  eval_loss_ = eval_loss;
  eval_step_ = step;
  if (last_) {
    StepMetrics metrics = *last_;
    metrics.eval_loss.reset();
    write_file_atomically(path_, render(metrics, now_unix_seconds()));
    return;
  }
  Renderer r(labels_);
  r.gauge("dstrain_step", "Last completed optimizer step.", static_cast<double>(step));
  r.gauge("dstrain_eval_loss", "Validation loss of the latest evaluation.", eval_loss);
  r.gauge("dstrain_eval_step", "Step of the latest evaluation.", static_cast<double>(step));
  r.gauge("dstrain_last_update_timestamp_seconds", "Unix time this file was written.",
          now_unix_seconds());
  write_file_atomically(path_, r.take());
}

}  // namespace dst

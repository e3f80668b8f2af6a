#include "deepseek_train/train/metrics.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "deepseek_train/core/error.h"

namespace dst {

MetricsWriter::MetricsWriter(const std::string& path) : path_(path) {
  std::filesystem::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  out_.open(path, std::ios::out | std::ios::app);
  DST_CHECK(out_.good(), DataError, path << ": cannot open metrics file for writing");
}

void MetricsWriter::write(const StepMetrics& m) {
  nlohmann::json json = {
      {"step", m.step},
      {"loss", m.loss},
      {"lr", m.lr},
      {"grad_norm", m.grad_norm},
      {"tokens", m.tokens},
      {"tokens_per_s", m.tokens_per_s},
      {"step_time_s", m.step_time_s},
      {"comm_bytes", m.comm_bytes},
      {"comm_wait_s", m.comm_wait_s},
      {"peak_rss_mb", m.peak_rss_mb},
      {"loss_scale", m.loss_scale},
      {"skipped", m.skipped},
      {"skipped_steps", m.skipped_steps},
  };
  if (m.pipeline_wait_s > 0) json["pipeline_wait_s"] = m.pipeline_wait_s;
  if (!m.comm_bytes_by_op.empty()) json["comm_bytes_by_op"] = m.comm_bytes_by_op;
  if (m.eval_loss) {
    json["eval_loss"] = *m.eval_loss;
    json["eval_perplexity"] = std::exp(*m.eval_loss);
  }
  out_ << json.dump() << "\n";
  out_.flush();
  DST_CHECK(out_.good(), DataError, path_ << ": cannot write metrics");
}

void MetricsWriter::write_eval(int64_t step, double eval_loss) {
  out_ << nlohmann::json{{"step", step},
                         {"eval_loss", eval_loss},
                         {"eval_perplexity", std::exp(eval_loss)}}
              .dump()
       << "\n";
  out_.flush();
  DST_CHECK(out_.good(), DataError, path_ << ": cannot write metrics");
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t total = static_cast<int64_t>(std::llround(seconds));
  char buffer[32];
  if (total >= 3600) {
    std::snprintf(buffer, sizeof(buffer), "%lldh%02lldm", static_cast<long long>(total / 3600),
                  static_cast<long long>((total % 3600) / 60));
  } else if (total >= 60) {
    std::snprintf(buffer, sizeof(buffer), "%lldm%02llds", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  } else {
    std::snprintf(buffer, sizeof(buffer), "%llds", static_cast<long long>(total));
  }
  return buffer;
}

std::string format_count(double value) {
  char buffer[32];
  if (value >= 1e6) {
    std::snprintf(buffer, sizeof(buffer), "%.2fM", value / 1e6);
  } else if (value >= 1e3) {
    std::snprintf(buffer, sizeof(buffer), "%.1fk", value / 1e3);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.0f", value);
  }
  return buffer;
}

std::string format_progress_line(const StepMetrics& m, double eta_seconds) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer),
                "step %lld/%lld | loss %.4f | lr %.2e | grad-norm %.3f | %s tok/s | ETA %s",
                static_cast<long long>(m.step), static_cast<long long>(m.total_steps), m.loss, m.lr,
                m.grad_norm, format_count(m.tokens_per_s).c_str(),
                format_duration(eta_seconds).c_str());
  std::string line = buffer;
  if (m.loss_scale != 1.0) {
    std::snprintf(buffer, sizeof(buffer), " | scale %g", m.loss_scale);
    line += buffer;
  }
  if (m.skipped) line += " | skipped (non-finite gradients)";
  if (m.eval_loss) {
    std::snprintf(buffer, sizeof(buffer), " | eval %.4f (ppl %.2f)", *m.eval_loss,
                  std::exp(*m.eval_loss));
    line += buffer;
  }
  return line;
}

}  // namespace dst

#include "deepseek_train/train/metrics.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"

namespace dst {

double model_flops_per_token(int64_t parameters) { return 6.0 * static_cast<double>(parameters); }

double mfu(double tokens_per_s, int64_t parameters, double peak_flops) {
  if (!(peak_flops > 0) || !(tokens_per_s > 0) || parameters <= 0) return 0.0;
  const double value = tokens_per_s * model_flops_per_token(parameters) / peak_flops;
  return std::isfinite(value) ? value : 0.0;
}

void check_output_file_writable(const std::string& path, const std::string& what) {
  namespace fs = std::filesystem;
  DST_CHECK(!path.empty(), DataError, what << ": empty path");
  const fs::path parent = fs::path(path).parent_path();
  const std::string directory = parent.empty() ? std::string(".") : parent.string();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    DST_CHECK(!ec, DataError,
              what << " '" << path << "': cannot create directory '" << directory
                   << "': " << ec.message());
    DST_CHECK(fs::is_directory(parent, ec), DataError,
              what << " '" << path << "': cannot create directory '" << directory
                   << "': " << std::strerror(ENOTDIR));
  }
  std::error_code ec;
  DST_CHECK(!fs::is_directory(path, ec), DataError,
            what << " '" << path << "': " << std::strerror(EISDIR));
  // Create (and remove) a probe file: the check that counts (access(W_OK) uses the real uid and
  // misses e.g. immutable directories or exhausted inodes).
  const std::string probe = temporary_path_for(path);
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int error = errno;
    DST_THROW(DataError, what << " '" << path << "': cannot create files in directory '"
                              << directory << "': " << std::strerror(error));
  }
  ::close(fd);
  ::unlink(probe.c_str());
}

MetricsWriter::MetricsWriter(const std::string& path) : path_(path) {
  check_output_file_writable(path, "metrics file");
  errno = 0;
  out_.open(path, std::ios::out | std::ios::app);
  const int error = errno;
  DST_CHECK(out_.is_open() && out_.good(), DataError,
            "metrics file '" << path << "': cannot open for appending: "
                             << (error != 0 ? std::strerror(error) : "unknown error"));
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
  if (m.expert_load_max_over_mean > 0) {
    json["expert_load_max_over_mean"] = m.expert_load_max_over_mean;
    json["dropped_tokens"] = m.dropped_tokens;
  }
  if (m.balance_loss > 0) json["balance_loss"] = m.balance_loss;
  if (m.privacy) {
    json["epsilon"] = m.privacy->epsilon;
    json["delta"] = m.privacy->delta;
    json["sample_rate"] = m.privacy->sample_rate;
    json["noise_multiplier"] = m.privacy->noise_multiplier;
    json["examples"] = m.privacy->examples;
    json["clipped_fraction"] = m.privacy->clipped_fraction;
  }
  if (!m.comm_bytes_by_op.empty()) json["comm_bytes_by_op"] = m.comm_bytes_by_op;
  if (!m.comm_wait_s_by_op.empty()) json["comm_wait_s_by_op"] = m.comm_wait_s_by_op;
  if (m.mfu > 0) json["mfu"] = m.mfu;
  if (m.planned_peak_rss_mb > 0) json["planned_peak_rss_mb"] = m.planned_peak_rss_mb;
  if (m.peak_device_allocated_mb > 0) {
    json["peak_device_allocated_mb"] = m.peak_device_allocated_mb;
    json["peak_device_reserved_mb"] = m.peak_device_reserved_mb;
    json["planned_peak_device_mb"] = m.planned_peak_device_mb;
  }
  if (m.peak_rss_mb_max > 0) json["peak_rss_mb_max"] = m.peak_rss_mb_max;
  if (!m.peak_rss_mb_per_rank.empty()) json["peak_rss_mb_per_rank"] = m.peak_rss_mb_per_rank;
  if (m.eval_loss) {
    json["eval_loss"] = *m.eval_loss;
    json["eval_perplexity"] = std::exp(*m.eval_loss);
  }
  write_line(json.dump());
}

void MetricsWriter::write_eval(int64_t step, double eval_loss) {
  write_line(nlohmann::json{
      {"step", step}, {"eval_loss", eval_loss}, {"eval_perplexity", std::exp(eval_loss)}}
                 .dump());
}

void MetricsWriter::write_line(const std::string& line) {
  errno = 0;
  out_ << line << "\n";
  out_.flush();
  const int error = errno;
  DST_CHECK(out_.good(), DataError,
            "metrics file '" << path_ << "': cannot write: "
                             << (error != 0 ? std::strerror(error) : "unknown error"));
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

namespace {

// "MFU 31.2%"; empty when unknown.
std::string format_mfu(double mfu) {
  if (!(mfu > 0) || !std::isfinite(mfu)) return "";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "MFU %.1f%%", 100.0 * mfu);
  return buffer;
}

}  // namespace

std::string format_progress_line(const StepMetrics& m, double eta_seconds) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer),
                "step %lld/%lld | loss %.4f | lr %.2e | grad-norm %.3f | %s tok/s",
                static_cast<long long>(m.step), static_cast<long long>(m.total_steps), m.loss, m.lr,
                m.grad_norm, format_count(m.tokens_per_s).c_str());
  std::string line = buffer;
  const std::string mfu_text = format_mfu(m.mfu);
  if (!mfu_text.empty()) line += " | " + mfu_text;
  line += " | ETA " + format_duration(eta_seconds);
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

std::string format_progress_bar(const StepMetrics& m, double eta_seconds, int width) {
  constexpr int kMaxCells = 20, kMinCells = 5;
  const bool known_total = m.total_steps > 0;
  const int64_t step = std::max<int64_t>(m.step, 0);
  const int64_t done = known_total ? std::min(step, m.total_steps) : 0;

  char buffer[128];
  std::string counts;
  if (known_total) {
    const int digits = static_cast<int>(std::to_string(m.total_steps).size());
    std::snprintf(buffer, sizeof(buffer), " %*lld/%lld %lld%%", digits,
                  static_cast<long long>(step), static_cast<long long>(m.total_steps),
                  static_cast<long long>(done * 100 / m.total_steps));
  } else {
    std::snprintf(buffer, sizeof(buffer), " step %lld", static_cast<long long>(step));
  }
  counts = buffer;

  // Fields in display order, each with the rank it is dropped in (0 first) when space is short.
  struct Field {
    std::string text;
    int drop_rank;
  };
  std::vector<Field> fields;
  std::snprintf(buffer, sizeof(buffer), "loss %.4f", m.loss);
  fields.push_back({buffer, 3});
  std::snprintf(buffer, sizeof(buffer), "lr %.2e", m.lr);
  fields.push_back({buffer, 0});
  fields.push_back({format_count(m.tokens_per_s) + " tok/s", 2});
  const std::string mfu_text = format_mfu(m.mfu);
  if (!mfu_text.empty()) fields.push_back({mfu_text, 1});
  fields.push_back({"ETA " + format_duration(eta_seconds), 4});

  auto render = [&](int cells, int dropped) {
    const int64_t filled = known_total ? cells * done / m.total_steps : 0;
    std::string line = "[";
    line.append(static_cast<size_t>(filled), '#');
    line.append(static_cast<size_t>(cells - filled), '.');
    line += "]" + counts;
    for (const Field& field : fields)
      if (field.drop_rank >= dropped) line += " | " + field.text;
    return line;
  };

  if (width <= 0) return render(kMaxCells, 0);
  for (int dropped = 0; dropped <= 5; ++dropped) {
    const int without_bar = static_cast<int>(render(0, dropped).size());
    const int cells = std::min(kMaxCells, width - without_bar);
    if (cells >= kMinCells) return render(cells, dropped);
  }
  std::string line = render(kMinCells, 5);
  if (static_cast<int>(line.size()) > width) line.resize(static_cast<size_t>(width));
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line;
}

ProgressDisplay::ProgressDisplay(std::FILE* stream, bool is_terminal, int width,
                                 double min_interval_s)
    : stream_(stream), is_terminal_(is_terminal), width_(width), min_interval_s_(min_interval_s) {
  DST_CHECK(stream != nullptr, ConfigError, "progress display: no output stream");
}

ProgressDisplay::~ProgressDisplay() {
  try {
    finish();
  } catch (...) {
  }
}

int ProgressDisplay::current_width() const {
  if (width_ > 0) return width_;
  int columns = 0;
  winsize size{};
  if (is_terminal_ && ::ioctl(fileno(stream_), TIOCGWINSZ, &size) == 0) columns = size.ws_col;
  if (columns <= 0) {
    if (const char* env = std::getenv("COLUMNS")) columns = std::atoi(env);
  }
  if (columns <= 0) columns = 80;
  return std::max(columns - 1, 1);  // the last column would make some terminals wrap
}

void ProgressDisplay::draw(const std::string& bar) {
  std::fputs("\r", stream_);
  std::fputs(bar.c_str(), stream_);
  std::fputs("\x1b[K", stream_);  // clear the rest of the line (a longer previous bar)
  std::fflush(stream_);
  shown_ = true;
}

void ProgressDisplay::update(const StepMetrics& metrics, double eta_seconds) {
  if (!is_terminal_) return;
  const bool last = metrics.total_steps > 0 && metrics.step >= metrics.total_steps;
  const auto now = std::chrono::steady_clock::now();
  if (!force_draw_ && !last &&
      std::chrono::duration<double>(now - last_draw_).count() < min_interval_s_)
    return;
  bar_ = format_progress_bar(metrics, eta_seconds, current_width());
  draw(bar_);
  last_draw_ = now;
  force_draw_ = false;
  if (last) finish();
}

void ProgressDisplay::line(const std::string& text) {
  const bool redraw = is_terminal_ && shown_;
  if (redraw) std::fputs("\r\x1b[K", stream_);
  std::fputs(text.c_str(), stream_);
  std::fputc('\n', stream_);
  if (redraw) draw(bar_);
  std::fflush(stream_);
}

void ProgressDisplay::clear() {
  if (is_terminal_ && shown_) {
    std::fputs("\r\x1b[K", stream_);
    std::fflush(stream_);
  }
  shown_ = false;
  force_draw_ = true;
}

void ProgressDisplay::finish() {
  if (is_terminal_ && shown_) {
    std::fputc('\n', stream_);
    std::fflush(stream_);
  }
  shown_ = false;
  force_draw_ = true;
  bar_.clear();
}

}  // namespace dst

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "deepseek_train/core/error.h"
#include "deepseek_train/train/metrics.h"
#include "deepseek_train/train/prometheus_textfile.h"

using namespace dst;

TEST_CASE("progress line and formatting", "[metrics]") {
  CHECK(format_duration(42) == "42s");
  CHECK(format_duration(185) == "3m05s");
  CHECK(format_duration(3720) == "1h02m");
  CHECK(format_count(950) == "950");
  CHECK(format_count(12345) == "12.3k");
  CHECK(format_count(1.2e6) == "1.20M");
  StepMetrics m;
  m.step = 10;
  m.total_steps = 200;
  m.loss = 3.21;
  m.lr = 1e-3;
  m.grad_norm = 0.85;
  m.tokens_per_s = 12345;
  CHECK(format_progress_line(m, 80) ==
        "step 10/200 | loss 3.2100 | lr 1.00e-03 | grad-norm 0.850 | 12.3k tok/s | ETA 1m20s");
  m.eval_loss = 2.5;
  CHECK(format_progress_line(m, 80).find("| eval 2.5000") != std::string::npos);
}

TEST_CASE("metrics.jsonl: one JSON object per step", "[metrics]") {
  const auto dir = std::filesystem::temp_directory_path() / "dst_metrics_test";
  std::filesystem::remove_all(dir);
  const std::string path = (dir / "sub" / "metrics.jsonl").string();
  {
    MetricsWriter writer(path);
    StepMetrics m;
    m.step = 1;
    m.loss = 2.0;
    m.comm_bytes = 1024;
    writer.write(m);
    m.step = 2;
    m.eval_loss = 1.5;
    writer.write(m);
    writer.write_eval(0, 5.5);
  }
  std::ifstream in(path);
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  REQUIRE(rows.size() == 3);
  CHECK(rows[2].size() == 3);  // step, eval_loss, eval_perplexity
  CHECK(rows[2]["eval_loss"] == 5.5);
  for (const char* key : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "comm_bytes"})
    CHECK(rows[0].contains(key));
  CHECK(rows[0]["comm_bytes"] == 1024);
  CHECK_FALSE(rows[0].contains("eval_loss"));
  CHECK(rows[1]["eval_loss"] == 1.5);
  std::filesystem::remove_all(dir);
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Everything written to a tmpfile() stream so far.
std::string read_stream(std::FILE* stream) {
  std::fflush(stream);
  std::rewind(stream);
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), stream)) > 0) text.append(buffer, n);
  return text;
}

// A fresh, empty scratch directory under the system temp directory.
std::filesystem::path scratch_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

StepMetrics sample_metrics() {
  StepMetrics m;
  m.step = 40;
  m.total_steps = 200;
  m.loss = 3.21;
  m.lr = 1e-3;
  m.grad_norm = 0.85;
  m.tokens_per_s = 12345;
  m.mfu = 0.312;
  return m;
}

}  // namespace

TEST_CASE("model FLOPs per token and MFU", "[metrics]") {
  CHECK(model_flops_per_token(1000) == 6000.0);
  CHECK(model_flops_per_token(0) == 0.0);
  // 1000 tok/s * 6 * 1e9 FLOP/token on a 12e12 FLOP/s peak: 50%.
  CHECK(mfu(1000, 1000000000, 12e12) == Approx(0.5));
  CHECK(mfu(1000, 1000000000, 0) == 0.0);
  CHECK(mfu(0, 1000000000, 12e12) == 0.0);
  CHECK(mfu(1000, 0, 12e12) == 0.0);

  StepMetrics m = sample_metrics();
  m.step = 10;
  CHECK(format_progress_line(m, 80) ==
        "step 10/200 | loss 3.2100 | lr 1.00e-03 | grad-norm 0.850 | 12.3k tok/s | MFU 31.2% | "
        "ETA 1m20s");
}

TEST_CASE("metrics.jsonl: MFU, per-collective wait and per-rank memory", "[metrics]") {
  const auto dir = scratch_dir("dst_metrics_test_fields");
  const std::string path = (dir / "metrics.jsonl").string();
  {
    MetricsWriter writer(path);
    StepMetrics plain;
    plain.step = 1;
    writer.write(plain);
    StepMetrics m;
    m.step = 2;
    m.mfu = 0.25;
    m.comm_wait_s_by_op = {{"all_reduce", 0.5}, {"all_gather", 0.125}};
    m.comm_bytes_by_op = {{"all_reduce", 4096}};
    m.peak_rss_mb = 100;
    m.peak_rss_mb_max = 300;
    m.peak_rss_mb_per_rank = {100, 300};
    m.peak_device_allocated_mb = 1500;  // a GPU run: device memory beside the plan's
    m.peak_device_reserved_mb = 2048;
    m.planned_peak_device_mb = 1400;
    writer.write(m);
  }
  std::ifstream in(path);
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  REQUIRE(rows.size() == 2);
  // Unset new fields add no keys: the existing 13 keys only, with their names unchanged.
  CHECK(rows[0].size() == 13);
  for (const char* key :
       {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "step_time_s", "comm_bytes",
        "comm_wait_s", "peak_rss_mb", "loss_scale", "skipped", "skipped_steps"})
    CHECK(rows[0].contains(key));
  CHECK(rows[1]["mfu"] == 0.25);
  CHECK(rows[1]["comm_wait_s_by_op"]["all_reduce"] == 0.5);
  CHECK(rows[1]["comm_wait_s_by_op"]["all_gather"] == 0.125);
  CHECK(rows[1]["comm_bytes_by_op"]["all_reduce"] == 4096);
  CHECK(rows[1]["peak_rss_mb_max"] == 300.0);
  REQUIRE(rows[1]["peak_rss_mb_per_rank"].is_array());
  REQUIRE(rows[1]["peak_rss_mb_per_rank"].size() == 2);
  CHECK(rows[1]["peak_rss_mb_per_rank"][0] == 100.0);
  CHECK(rows[1]["peak_rss_mb_per_rank"][1] == 300.0);
  CHECK(rows[1]["peak_device_allocated_mb"] == 1500.0);
  CHECK(rows[1]["peak_device_reserved_mb"] == 2048.0);
  CHECK(rows[1]["planned_peak_device_mb"] == 1400.0);
  CHECK_FALSE(rows[0].contains("peak_device_allocated_mb"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("metrics writer: an unusable path fails early, naming the path and the reason",
          "[metrics]") {
  // Tests run as root, which ignores permission bits: a regular file where a directory should be
  // is the portable "cannot write here".
  const auto dir = scratch_dir("dst_metrics_test_unwritable");
  const std::string blocker = (dir / "not_a_dir").string();
  std::ofstream(blocker) << "x";
  for (const std::string& path : {blocker + "/metrics.jsonl", blocker + "/sub/metrics.jsonl"}) {
    try {
      MetricsWriter writer(path);
      FAIL("no error for " << path);
    } catch (const DataError& e) {
      const std::string message = e.what();
      CHECK(message.find("'" + path + "'") != std::string::npos);
      CHECK(message.find("cannot create directory") != std::string::npos);
      CHECK(message.find(std::strerror(ENOTDIR)) != std::string::npos);
      CHECK(message.find('\n') == std::string::npos);
    }
  }
  // The path is a directory.
  try {
    MetricsWriter writer(dir.string());
    FAIL("no error for a directory");
  } catch (const DataError& e) {
    const std::string message = e.what();
    CHECK(message.find("'" + dir.string() + "'") != std::string::npos);
    CHECK(message.find(std::strerror(EISDIR)) != std::string::npos);
  }
  // The probe file is not left behind on success.
  { MetricsWriter writer((dir / "ok" / "metrics.jsonl").string()); }
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir / "ok")) {
    (void)entry;
    ++files;
  }
  CHECK(files == 1);
  std::filesystem::remove_all(dir);
}

TEST_CASE("progress bar: percent, ETA, width", "[metrics]") {
  const StepMetrics m = sample_metrics();
  CHECK(format_progress_bar(m, 80, 0) ==
        "[####................]  40/200 20% | loss 3.2100 | lr 1.00e-03 | 12.3k tok/s | MFU 31.2% "
        "| ETA 1m20s");
  for (int width = 1; width <= 140; ++width) {
    const std::string bar = format_progress_bar(m, 80, width);
    INFO("width " << width << ": " << bar);
    CHECK(static_cast<int>(bar.size()) <= width);
    CHECK(bar.find('\n') == std::string::npos);
    CHECK(bar.find('\r') == std::string::npos);
    if (width >= 32) {
      CHECK(bar.find(" 40/200 20%") != std::string::npos);
      CHECK(bar.find("ETA 1m20s") != std::string::npos);
    }
  }
  // Narrower: the bar shrinks, then lr goes first, then MFU; ETA and loss stay longest.
  const std::string narrow = format_progress_bar(m, 80, 70);
  CHECK(narrow.find("lr ") == std::string::npos);
  CHECK(narrow.find("loss 3.2100") != std::string::npos);
  CHECK(narrow.find("ETA 1m20s") != std::string::npos);
  CHECK(format_progress_bar(m, 80, 40).find("MFU") == std::string::npos);

  StepMetrics done = m;
  done.step = 200;
  done.mfu = 0;
  CHECK(format_progress_bar(done, 0, 0) ==
        "[####################] 200/200 100% | loss 3.2100 | lr 1.00e-03 | 12.3k tok/s | ETA 0s");
  StepMetrics unknown = m;
  unknown.total_steps = 0;
  CHECK(format_progress_bar(unknown, -1, 0).find("] step 40 |") != std::string::npos);
  CHECK(format_progress_bar(unknown, -1, 0).find("ETA ?") != std::string::npos);
}

TEST_CASE("progress display: not a terminal, update() prints nothing", "[metrics]") {
  std::FILE* stream = std::tmpfile();
  REQUIRE(stream != nullptr);
  {
    ProgressDisplay display(stream, /*is_terminal=*/false, 80, 0.0);
    StepMetrics m = sample_metrics();
    display.update(m, 80);
    m.step = 200;
    display.update(m, 0);
    CHECK(read_stream(stream).empty());
    std::fseek(stream, 0, SEEK_END);
    display.line("step 40/200 | loss 3.2100");
  }
  CHECK(read_stream(stream) == "step 40/200 | loss 3.2100\n");
  std::fclose(stream);
}

TEST_CASE("progress display: on a terminal, redraws in place, rate-limited", "[metrics]") {
  std::FILE* stream = std::tmpfile();
  REQUIRE(stream != nullptr);
  StepMetrics m = sample_metrics();
  const std::string bar40 = "\r" + format_progress_bar(m, 80, 100) + "\x1b[K";
  {
    // A huge interval: only the first update and the last step draw.
    ProgressDisplay display(stream, /*is_terminal=*/true, 100, 1e9);
    CHECK(display.width() == 100);
    display.update(m, 80);
    CHECK(read_stream(stream) == bar40);
    std::fseek(stream, 0, SEEK_END);
    m.step = 41;
    display.update(m, 79);
    CHECK(read_stream(stream) == bar40);  // within the interval: not redrawn
    std::fseek(stream, 0, SEEK_END);
    display.line("eval 2.5");  // erase the bar, print the line, redraw the bar
    CHECK(read_stream(stream) == bar40 + "\r\x1b[Keval 2.5\n" + bar40);
    std::fseek(stream, 0, SEEK_END);
    m.step = 200;
    display.update(m, 0);  // last step: drawn regardless, and the line is ended
    const std::string bar200 = "\r" + format_progress_bar(m, 0, 100) + "\x1b[K\n";
    CHECK(read_stream(stream) == bar40 + "\r\x1b[Keval 2.5\n" + bar40 + bar200);
    std::fseek(stream, 0, SEEK_END);
    display.line("done");
    CHECK(read_stream(stream) == bar40 + "\r\x1b[Keval 2.5\n" + bar40 + bar200 + "done\n");
  }
  std::fclose(stream);

  // A zero interval redraws every update; clear() erases and forces the next draw.
  stream = std::tmpfile();
  REQUIRE(stream != nullptr);
  {
    ProgressDisplay display(stream, true, 100, 0.0);
    m = sample_metrics();
    display.update(m, 80);
    display.update(m, 80);
    CHECK(read_stream(stream) == bar40 + bar40);
    std::fseek(stream, 0, SEEK_END);
    display.clear();
    CHECK(read_stream(stream) == bar40 + bar40 + "\r\x1b[K");
    std::fseek(stream, 0, SEEK_END);
  }  // nothing shown after clear(): the destructor adds no newline
  CHECK(read_stream(stream) == bar40 + bar40 + "\r\x1b[K");
  std::fclose(stream);
}

namespace {

// Checks the text exposition format line by line: "# HELP name text", "# TYPE name type" (once
// per family, before its samples, families not interleaved) and "name{labels} value" samples.
// Returns the samples as "name{labels}" -> value.
std::map<std::string, double> parse_prometheus(const std::string& text) {
  static const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+)");
  static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter))");
  static const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:\\[\\"n]|[^"\\\n])*")"
      R"((?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:\\[\\"n]|[^"\\\n])*")*\})? (\S+))");
  std::map<std::string, double> samples;
  std::set<std::string> typed;
  std::string current;
  REQUIRE(!text.empty());
  REQUIRE(text.back() == '\n');
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    INFO("line: " << line);
    std::smatch match;
    if (std::regex_match(line, match, help)) {
      CHECK(typed.count(match[1]) == 0);
    } else if (std::regex_match(line, match, type)) {
      CHECK(typed.insert(match[1]).second);
      current = match[1];
    } else {
      REQUIRE(std::regex_match(line, match, sample));
      CHECK(match[1].str() == current);
      const std::string value = match[3];
      char* end = nullptr;
      const double parsed = std::strtod(value.c_str(), &end);
      CHECK((*end == '\0' || value == "NaN" || value == "+Inf" || value == "-Inf"));
      const std::string key = std::string(match[1]) + std::string(match[2]);
      CHECK(samples.count(key) == 0);
      samples[key] = parsed;
    }
  }
  return samples;
}

}  // namespace

TEST_CASE("prometheus textfile: every line parses, labels escaped", "[metrics]") {
  const auto dir = scratch_dir("dst_metrics_test_prom");
  const std::string path = (dir / "textfile" / "dstrain.prom").string();
  PrometheusTextfile file(path, {{"run", "quickstart"}, {"job", "a\"b\\c\nd"}});
  StepMetrics m = sample_metrics();
  m.tokens = 4096;
  m.step_time_s = 0.5;
  m.skipped_steps = 2;
  m.comm_bytes_by_op = {{"all_reduce", 55070208}, {"all_gather", 1024}};
  m.comm_wait_s_by_op = {{"all_reduce", 0.25}};
  m.peak_rss_mb = 100;
  m.peak_rss_mb_per_rank = {100, 200};
  m.eval_loss = 2.5;
  auto unix_now = [] {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const double before = unix_now();
  file.write(m);
  const double after = unix_now();

  const std::string text = read_text(path);
  INFO(text);
  const auto samples = parse_prometheus(text);
  const std::string labels = R"(job="a\"b\\c\nd",run="quickstart")";
  auto value = [&](const std::string& name, const std::string& extra = "") {
    const std::string key = name + "{" + labels + extra + "}";
    INFO("sample " << key);
    REQUIRE(samples.count(key) == 1);
    return samples.at(key);
  };
  CHECK(value("dstrain_step") == 40);
  CHECK(value("dstrain_total_steps") == 200);
  CHECK(value("dstrain_loss") == Approx(3.21));
  CHECK(value("dstrain_learning_rate") == Approx(1e-3));
  CHECK(value("dstrain_grad_norm") == Approx(0.85));
  CHECK(value("dstrain_tokens_per_second") == 12345);
  CHECK(value("dstrain_step_duration_seconds") == 0.5);
  CHECK(value("dstrain_mfu") == Approx(0.312));
  CHECK(value("dstrain_peak_rss_bytes", R"(,rank="0")") == 100.0 * 1024 * 1024);
  CHECK(value("dstrain_peak_rss_bytes", R"(,rank="1")") == 200.0 * 1024 * 1024);
  CHECK(value("dstrain_peak_rss_max_bytes") == 200.0 * 1024 * 1024);
  CHECK(value("dstrain_comm_bytes", R"(,op="all_reduce")") == 55070208);
  CHECK(value("dstrain_comm_bytes", R"(,op="all_gather")") == 1024);
  CHECK(value("dstrain_comm_wait_seconds", R"(,op="all_reduce")") == 0.25);
  CHECK(value("dstrain_skipped_steps_total") == 2);
  CHECK(value("dstrain_eval_loss") == 2.5);
  CHECK(value("dstrain_eval_step") == 40);
  // The time of the write: between the clock readings around it (whole seconds allowed for).
  CHECK(value("dstrain_last_update_timestamp_seconds") >= std::floor(before));
  CHECK(value("dstrain_last_update_timestamp_seconds") <= std::ceil(after));
  CHECK(text.find("# TYPE dstrain_skipped_steps_total counter\n") != std::string::npos);
  CHECK(text.find("# TYPE dstrain_loss gauge\n") != std::string::npos);

  CHECK(prometheus_escape_label_value("plain") == "plain");
  CHECK(prometheus_escape_label_value("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");
  CHECK(prometheus_format_value(0.5) == "0.5");
  CHECK(prometheus_format_value(40) == "40");
  CHECK(prometheus_format_value(std::nan("")) == "NaN");
  CHECK(prometheus_format_value(-HUGE_VAL) == "-Inf");
  CHECK(is_valid_prometheus_metric_name("dstrain_step"));
  CHECK(is_valid_prometheus_metric_name("a:b_1"));
  CHECK_FALSE(is_valid_prometheus_metric_name("1abc"));
  CHECK_FALSE(is_valid_prometheus_metric_name("a-b"));
  CHECK_FALSE(is_valid_prometheus_label_name("a:b"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("prometheus textfile: atomic overwrite, eval kept, errors", "[metrics]") {
  const auto dir = scratch_dir("dst_metrics_test_prom_atomic");
  const std::string path = (dir / "dstrain.prom").string();
  PrometheusTextfile file(path, {{"run", "r1"}});
  CHECK_FALSE(std::filesystem::exists(path));  // the constructor writes nothing

  file.write_eval(0, 5.5);  // before any step: the evaluation alone
  auto samples = parse_prometheus(read_text(path));
  CHECK(samples.at("dstrain_eval_loss{run=\"r1\"}") == 5.5);
  CHECK(samples.at("dstrain_step{run=\"r1\"}") == 0);

  StepMetrics m = sample_metrics();
  m.step = 1;
  file.write(m);
  samples = parse_prometheus(read_text(path));
  CHECK(samples.at("dstrain_step{run=\"r1\"}") == 1);
  CHECK(samples.at("dstrain_eval_loss{run=\"r1\"}") == 5.5);  // the latest evaluation is kept
  CHECK(samples.at("dstrain_eval_step{run=\"r1\"}") == 0);
  CHECK(samples.count("dstrain_comm_bytes{run=\"r1\"}") == 0);  // no collectives: no family
  CHECK(read_text(path).find("dstrain_comm_bytes") == std::string::npos);

  m.step = 2;
  m.eval_loss = 4.0;
  file.write(m);
  m.step = 3;
  m.eval_loss.reset();
  m.loss = 1.25;
  file.write(m);
  samples = parse_prometheus(read_text(path));
  CHECK(samples.at("dstrain_step{run=\"r1\"}") == 3);
  CHECK(samples.at("dstrain_loss{run=\"r1\"}") == 1.25);
  CHECK(samples.at("dstrain_eval_loss{run=\"r1\"}") == 4.0);
  CHECK(samples.at("dstrain_eval_step{run=\"r1\"}") == 2);
  // Replaced, not appended, and no temporary left beside it.
  const std::string text = read_text(path);
  CHECK(text.find("# TYPE dstrain_step gauge") == text.rfind("# TYPE dstrain_step gauge"));
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    INFO(entry.path().string());
    CHECK(entry.path().filename().string() == "dstrain.prom");
    ++files;
  }
  CHECK(files == 1);

  // A regular file where the directory should be: DataError naming the path, in one line.
  const std::string blocker = (dir / "not_a_dir").string();
  std::ofstream(blocker) << "x";
  const std::string bad = blocker + "/dstrain.prom";
  try {
    PrometheusTextfile unusable(bad, {{"run", "r1"}});
    FAIL("no error for " << bad);
  } catch (const DataError& e) {
    const std::string message = e.what();
    CHECK(message.find("'" + bad + "'") != std::string::npos);
    CHECK(message.find(std::strerror(ENOTDIR)) != std::string::npos);
    CHECK(message.find('\n') == std::string::npos);
  }
  CHECK_THROWS_AS(PrometheusTextfile(path, {{"bad-name", "x"}}), ConfigError);
  CHECK_THROWS_AS(PrometheusTextfile(path, {{"__name", "x"}}), ConfigError);
  CHECK_THROWS_AS(PrometheusTextfile(path, {{"rank", "0"}}), ConfigError);
  std::filesystem::remove_all(dir);
}

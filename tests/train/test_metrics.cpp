#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "deepseek_train/train/metrics.h"

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

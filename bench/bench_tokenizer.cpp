// Tokenizer throughput: encodes a text file with a tokenizer.json on 1 thread (cold, then warm
// word cache), then on 2 threads sharing one tokenizer (as corpus preparation does), and prints
// one line per case: wall-clock MB/s and MB per CPU-second against the 1 MB/s-per-core target.
//
// Usage: bench_tokenizer <tokenizer.json> [text file, default
// ../shared/data/corpus/war-and-peace.txt]
#include <chrono>
#include <cstdio>
#include <ctime>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "deepseek_train/data/bpe_tokenizer.h"

namespace {

constexpr double kTargetMegabytesPerSecondPerCore = 1.0;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Splits `text` into `parts` pieces at line ends, so each thread gets whole lines.
std::vector<std::string> split_at_lines(const std::string& text, size_t parts) {
  std::vector<std::string> pieces;
  size_t start = 0;
  for (size_t i = 1; i <= parts; ++i) {
    size_t end = i == parts ? text.size() : text.size() * i / parts;
    if (end < text.size()) {
      const size_t newline = text.find('\n', end);
      end = newline == std::string::npos ? text.size() : newline + 1;
    }
    pieces.push_back(text.substr(start, end - start));
    start = end;
  }
  return pieces;
}

// Wall-clock MB/s, and MB per CPU-second (the per-core rate, which holds up on a loaded machine).
void report(const char* label, size_t threads, size_t bytes, size_t tokens, double seconds,
            double cpu_seconds) {
  const double megabytes = static_cast<double>(bytes) / 1e6;
  const double per_core = megabytes / cpu_seconds;
  std::printf(
      "%-22s threads=%zu bytes=%zu tokens=%zu wall=%.3fs cpu=%.3fs  %.2f MB/s wall, "
      "%.2f MB/s per core = %.1fx the %.0f MB/s/core target\n",
      label, threads, bytes, tokens, seconds, cpu_seconds, megabytes / seconds, per_core,
      per_core / kTargetMegabytesPerSecondPerCore, kTargetMegabytesPerSecondPerCore);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <tokenizer.json> [text file]\n", argv[0]);
    return 2;
  }
  try {
    const std::string text_path = argc > 2 ? argv[2] : "../shared/data/corpus/war-and-peace.txt";
    const auto load_start = std::chrono::steady_clock::now();
    const dst::BpeTokenizer tokenizer(argv[1]);
    const double load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
    std::printf("%s loaded in %.3fs\n", tokenizer.describe().c_str(), load_seconds);
    const std::string text = read_file(text_path);
    const std::vector<std::string> lines = split_at_lines(text, 1000);

    // Encodes `pieces` on one thread; returns the token count.
    const auto encode_all = [&](const std::vector<std::string>& pieces) {
      size_t tokens = 0;
      for (const std::string& piece : pieces) tokens += tokenizer.encode(piece).size();
      return tokens;
    };
    const auto time_case = [&](const char* label, size_t thread_count) {
      std::vector<std::vector<std::string>> shares(thread_count);
      for (size_t i = 0; i < lines.size(); ++i) shares[i % thread_count].push_back(lines[i]);
      std::vector<size_t> tokens(thread_count, 0);
      const auto start = std::chrono::steady_clock::now();
      const std::clock_t cpu_start = std::clock();
      std::vector<std::thread> threads;
      for (size_t t = 0; t < thread_count; ++t) {
        threads.emplace_back([&, t] { tokens[t] = encode_all(shares[t]); });
      }
      for (std::thread& thread : threads) thread.join();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double cpu_seconds = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
      size_t total = 0;
      for (size_t count : tokens) total += count;
      report(label, thread_count, text.size(), total, seconds, cpu_seconds);
    };
    time_case("1 thread, cold cache", 1);
    time_case("1 thread, warm cache", 1);
    time_case("2 threads, warm cache", 2);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}

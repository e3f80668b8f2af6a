// Rank-prefixed logging. A Logger is a small value passed to whoever logs; by default only rank 0
// prints INFO, every rank prints WARN and ERROR. No global logger state.
#pragma once

#include <cstdio>
#include <sstream>
#include <string>

namespace dst {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

class Logger {
 public:
  Logger() = default;
  Logger(int rank, int world_size, LogLevel level = LogLevel::kInfo, bool all_ranks = false)
      : rank_(rank), world_size_(world_size), level_(level), all_ranks_(all_ranks) {}

  // True when a message at this level from this rank would be printed.
  bool enabled(LogLevel level) const;
  void log(LogLevel level, const std::string& message) const;

  void debug(const std::string& m) const { log(LogLevel::kDebug, m); }
  void info(const std::string& m) const { log(LogLevel::kInfo, m); }
  void warn(const std::string& m) const { log(LogLevel::kWarn, m); }
  void error(const std::string& m) const { log(LogLevel::kError, m); }

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

 private:
  int rank_ = 0;
  int world_size_ = 1;
  LogLevel level_ = LogLevel::kInfo;
  bool all_ranks_ = false;
};

// Parses "debug|info|warn|error"; throws ConfigError otherwise.
LogLevel parse_log_level(const std::string& name);

}  // namespace dst

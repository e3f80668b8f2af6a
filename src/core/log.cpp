#include "deepseek_train/core/log.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <iostream>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {
const char* level_tag(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "D";
    case LogLevel::kInfo:
      return "I";
    case LogLevel::kWarn:
      return "W";
    case LogLevel::kError:
      return "E";
  }
  return "?";
}
}  // namespace

bool Logger::enabled(LogLevel level) const {
  if (level < level_) return false;
  if (level >= LogLevel::kWarn) return true;
  return all_ranks_ || rank_ == 0;
}

void Logger::log(LogLevel level, const std::string& message) const {
  if (!enabled(level)) return;
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm_utc{};
  gmtime_r(&now, &tm_utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm_utc);
  std::ostringstream line;
  line << "[" << stamp << " " << level_tag(level) << " rank " << rank_ << "/" << world_size_ << "] "
       << message << "\n";
  // One write per line so lines from different ranks do not interleave mid-line.
  std::cerr << line.str() << std::flush;
}

LogLevel parse_log_level(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "debug") return LogLevel::kDebug;
  if (lower == "info") return LogLevel::kInfo;
  if (lower == "warn" || lower == "warning") return LogLevel::kWarn;
  if (lower == "error") return LogLevel::kError;
  DST_THROW(ConfigError, "unknown log level '" << name << "' (expected debug, info, warn, error)");
}

}  // namespace dst

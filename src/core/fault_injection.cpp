#include "deepseek_train/core/fault_injection.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <thread>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

const char* const kPoints[] = {"step_begin", "backward", "step_end", "save", "commit"};

bool known_point(const std::string& point) {
  for (const char* p : kPoints)
    if (point == p) return true;
  return false;
}

int64_t parse_integer(const std::string& text, const std::string& what, const std::string& source) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  DST_CHECK(used == text.size() && !text.empty(), ConfigError,
            source << ": " << what << " '" << text << "' is not an integer");
  return value;
}

}  // namespace

FaultPlan FaultPlan::parse(const std::string& spec, const std::string& source) {
  FaultPlan plan;
  if (spec.empty()) return plan;
  const size_t colon = spec.find(':');
  const std::string action = spec.substr(0, colon);
  if (action == "kill") {
    plan.action_ = Action::kKill;
  } else if (action == "sleep") {
    plan.action_ = Action::kSleep;
  } else if (action == "nan") {
    plan.action_ = Action::kNanGradient;
  } else {
    DST_THROW(ConfigError,
              source << ": unknown fault '" << action << "' (expected kill, sleep or nan)");
  }
  std::stringstream rest(colon == std::string::npos ? "" : spec.substr(colon + 1));
  std::string item;
  bool has_step = false;
  while (std::getline(rest, item, ',')) {
    const size_t equals = item.find('=');
    DST_CHECK(equals != std::string::npos, ConfigError,
              source << ": '" << item << "' is not key=value");
    const std::string key = item.substr(0, equals), value = item.substr(equals + 1);
    if (key == "rank") {
      plan.rank_ = static_cast<int>(parse_integer(value, "rank", source));
    } else if (key == "step") {
      plan.step_ = parse_integer(value, "step", source);
      has_step = true;
    } else if (key == "point") {
      DST_CHECK(known_point(value), ConfigError,
                source << ": unknown point '" << value
                       << "' (expected step_begin, backward, step_end, save or commit)");
      plan.point_ = value;
    } else if (key == "seconds") {
      try {
        plan.seconds_ = std::stod(value);
      } catch (const std::exception&) {
        plan.seconds_ = -1;
      }
      DST_CHECK(plan.seconds_ >= 0 && std::isfinite(plan.seconds_), ConfigError,
                source << ": seconds '" << value << "' is not a non-negative number");
    } else if (key == "parameter") {
      plan.parameter_ = value;
    } else {
      DST_THROW(ConfigError, source << ": unknown key '" << key << "'");
    }
  }
  DST_CHECK(has_step && plan.step_ > 0, ConfigError, source << ": needs step=S with S >= 1");
  if (plan.action_ == Action::kNanGradient) {
    DST_CHECK(!plan.parameter_.empty(), ConfigError, source << ": nan needs parameter=NAME");
  } else {
    DST_CHECK(!plan.point_.empty(), ConfigError, source << ": " << action << " needs point=P");
  }
  return plan;
}

bool FaultPlan::targets(int rank, int64_t step) const {
  return action_ != Action::kNone && step == step_ && (rank_ < 0 || rank == rank_);
}

void FaultPlan::at(int rank, int64_t step, const char* point) const {
  if (!targets(rank, step) || point_ != point) return;
  std::fprintf(stderr, "dstrain: fault injection: %s\n", describe().c_str());
  std::fflush(stderr);
  if (action_ == Action::kKill) {
    ::kill(::getpid(), SIGKILL);
  } else if (action_ == Action::kSleep) {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds_));
  }
}

std::string FaultPlan::describe() const {
  std::ostringstream text;
  switch (action_) {
    case Action::kNone:
      return "none";
    case Action::kKill:
      text << "kill";
      break;
    case Action::kSleep:
      text << "sleep " << seconds_ << " s";
      break;
    case Action::kNanGradient:
      text << "NaN gradient of " << parameter_;
      break;
  }
  text << " on " << (rank_ < 0 ? std::string("every rank") : "rank " + std::to_string(rank_))
       << " at step " << step_;
  if (!point_.empty()) text << ", point " << point_;
  return text.str();
}

}  // namespace dst

#include "deepseek_train/optim/optim_options.h"

#include "deepseek_train/core/error.h"

namespace dst {

LrScheduleType parse_lr_schedule_type(const std::string& name) {
  if (name == "constant") return LrScheduleType::kConstant;
  if (name == "linear") return LrScheduleType::kLinear;
  if (name == "cosine") return LrScheduleType::kCosine;
  DST_THROW(ConfigError,
            "unknown LR schedule '" << name << "' (expected constant, linear, cosine)");
}

std::string to_string(LrScheduleType type) {
  switch (type) {
    case LrScheduleType::kConstant:
      return "constant";
    case LrScheduleType::kLinear:
      return "linear";
    case LrScheduleType::kCosine:
      return "cosine";
  }
  return "?";
}

}  // namespace dst

#include "deepseek_train/precision/precision_policy.h"

#include <sstream>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

// Returns false for an unknown name instead of throwing, so callers can name their key.
bool try_parse_precision(const std::string& name, Precision* out) {
  if (name == "fp32" || name == "float32") {
    *out = Precision::kFloat32;
  } else if (name == "bf16" || name == "bfloat16") {
    *out = Precision::kBFloat16;
  } else if (name == "fp16" || name == "float16") {
    *out = Precision::kFloat16;
  } else {
    return false;
  }
  return true;
}

Precision parse_key(const std::string& key, const std::string& name) {
  Precision p = Precision::kFloat32;
  DST_CHECK(try_parse_precision(name, &p), ConfigError,
            key << " '" << name << "' is not one of fp32, bf16, fp16");
  return p;
}

}  // namespace

Precision parse_precision(const std::string& name) {
  Precision p = Precision::kFloat32;
  DST_CHECK(
      try_parse_precision(name, &p), ConfigError,
      "unknown precision '" << name << "' (expected fp32|float32, bf16|bfloat16, fp16|float16)");
  return p;
}

std::string to_string(Precision precision) {
  switch (precision) {
    case Precision::kFloat32:
      return "fp32";
    case Precision::kBFloat16:
      return "bf16";
    case Precision::kFloat16:
      return "fp16";
  }
  return "?";
}

int bytes_of(Precision precision) {
  switch (precision) {
    case Precision::kFloat32:
      return 4;
    case Precision::kBFloat16:
    case Precision::kFloat16:
      return 2;
  }
  DST_THROW(InternalError, "unknown Precision " << static_cast<int>(precision));
}

bool PrecisionPolicy::needs_loss_scaler() const {
  return param == Precision::kFloat16 || compute == Precision::kFloat16;
}

PrecisionPolicy PrecisionPolicy::from_options(const PrecisionOptions& options) {
  PrecisionPolicy policy;
  policy.param = parse_key("precision.param_dtype", options.param_dtype);
  policy.reduce = parse_key("precision.reduce_dtype", options.reduce_dtype);
  policy.compute = policy.param;
  // A low-precision model always keeps fp32 master weights in the optimizer.
  policy.master_weights = options.master_weights || policy.param != Precision::kFloat32;
  options.loss_scaler.validate();
  return policy;
}

std::string PrecisionPolicy::describe() const {
  std::ostringstream out;
  out << "param=" << to_string(param) << " compute=" << to_string(compute)
      << " reduce=" << to_string(reduce) << " master_weights=" << (master_weights ? "on" : "off")
      << " loss_scaler=" << (needs_loss_scaler() ? "on" : "off");
  return out.str();
}

ModelStateBytes model_state_bytes_per_element(const PrecisionPolicy& policy) {
  ModelStateBytes b;
  b.params = bytes_of(policy.param);
  b.grads = bytes_of(policy.param);
  // fp32 params are their own master copy; a low-precision model keeps a separate fp32 copy.
  b.master = policy.param == Precision::kFloat32 ? 0 : 4;
  b.moments = 2 * 4;
  return b;
}

}  // namespace dst

// Mixed-precision policy: which dtype parameters, activations/compute and gradient reductions use,
// whether the optimizer keeps fp32 master weights, and what that costs in model-state bytes per
// parameter element. Torch-free; the model/sharding code maps Precision onto torch dtypes.
#pragma once

#include <cstdint>
#include <string>

#include "deepseek_train/precision/loss_scaler.h"

namespace dst {

enum class Precision { kFloat32, kBFloat16, kFloat16 };

// "fp32"|"float32", "bf16"|"bfloat16", "fp16"|"float16"; throws ConfigError listing them otherwise.
Precision parse_precision(const std::string& name);
std::string to_string(Precision precision);  // canonical "fp32" / "bf16" / "fp16"
int bytes_of(Precision precision);           // 4 / 2 / 2

// Recipe section `precision:`.
struct PrecisionOptions {
  std::string param_dtype = "fp32";
  std::string reduce_dtype = "fp32";  // dtype of gradient reductions (all-reduce/reduce-scatter)
  bool master_weights = true;
  LossScalerOptions loss_scaler;  // used only when the policy needs a loss scaler (fp16)
};

struct PrecisionPolicy {
  Precision param = Precision::kFloat32;
  Precision compute = Precision::kFloat32;
  Precision reduce = Precision::kFloat32;
  bool master_weights = true;  // fp32 master copy in the optimizer; always true for bf16/fp16

  // fp16 has too little range for unscaled gradients: true when param or compute is fp16.
  bool needs_loss_scaler() const;

  // compute = param; master_weights is forced true when param is not fp32; any reduce dtype is
  // allowed. Throws ConfigError naming the key for an unknown dtype name, and validates
  // options.loss_scaler.
  static PrecisionPolicy from_options(const PrecisionOptions& options);

  // One line, e.g. "param=bf16 compute=bf16 reduce=fp32 master_weights=on loss_scaler=off".
  std::string describe() const;
};

// Bytes of model state per parameter element under the policy: params + grads + master + 2 Adam
// moments. Grads have the param dtype; moments are fp32. With fp32 params there is no separate
// master copy (the params are the master): {4, 4, 0, 8}. bf16/fp16: {2, 2, 4, 8} = 16 bytes, the
// ZeRO paper's 16 * Psi.
struct ModelStateBytes {
  int64_t params = 0;
  int64_t grads = 0;
  int64_t master = 0;
  int64_t moments = 0;
  int64_t total() const { return params + grads + master + moments; }
};

ModelStateBytes model_state_bytes_per_element(const PrecisionPolicy& policy);

}  // namespace dst

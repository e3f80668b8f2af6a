#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <string>

#include "deepseek_train/core/error.h"
#include "deepseek_train/precision/loss_scaler.h"
#include "deepseek_train/precision/precision_policy.h"

using namespace dst;
using Catch::Matchers::Contains;

namespace {

PrecisionPolicy policy_for(const std::string& param, const std::string& reduce = "fp32",
                           bool master = true) {
  PrecisionOptions o;
  o.param_dtype = param;
  o.reduce_dtype = reduce;
  o.master_weights = master;
  return PrecisionPolicy::from_options(o);
}

LossScalerOptions small_options() {
  LossScalerOptions o;
  o.initial_scale = 8.0;
  o.growth_factor = 2.0;
  o.backoff_factor = 0.5;
  o.growth_interval = 3;
  o.min_scale = 1.0;
  o.max_scale = 32.0;
  return o;
}

}  // namespace

TEST_CASE("parse_precision accepts canonical names and aliases", "[precision]") {
  CHECK(parse_precision("fp32") == Precision::kFloat32);
  CHECK(parse_precision("float32") == Precision::kFloat32);
  CHECK(parse_precision("bf16") == Precision::kBFloat16);
  CHECK(parse_precision("bfloat16") == Precision::kBFloat16);
  CHECK(parse_precision("fp16") == Precision::kFloat16);
  CHECK(parse_precision("float16") == Precision::kFloat16);
  for (Precision p : {Precision::kFloat32, Precision::kBFloat16, Precision::kFloat16}) {
    CHECK(parse_precision(to_string(p)) == p);
  }
  CHECK(to_string(Precision::kFloat32) == "fp32");
  CHECK(to_string(Precision::kBFloat16) == "bf16");
  CHECK(to_string(Precision::kFloat16) == "fp16");
  CHECK(bytes_of(Precision::kFloat32) == 4);
  CHECK(bytes_of(Precision::kBFloat16) == 2);
  CHECK(bytes_of(Precision::kFloat16) == 2);
}

TEST_CASE("parse_precision rejects unknown names and lists the accepted ones", "[precision]") {
  for (const char* bad : {"fp8", "FP32", "", "half", "float64"}) {
    CHECK_THROWS_AS(parse_precision(bad), ConfigError);
  }
  CHECK_THROWS_WITH(parse_precision("fp8"),
                    Contains("'fp8'") && Contains("fp32") && Contains("bf16") && Contains("fp16"));
}

TEST_CASE("PrecisionPolicy::from_options names the bad key and value", "[precision]") {
  PrecisionOptions o;
  o.param_dtype = "fp8";
  CHECK_THROWS_AS(PrecisionPolicy::from_options(o), ConfigError);
  CHECK_THROWS_WITH(PrecisionPolicy::from_options(o),
                    Contains("precision.param_dtype 'fp8' is not one of fp32, bf16, fp16"));

  PrecisionOptions r;
  r.reduce_dtype = "int8";
  CHECK_THROWS_WITH(PrecisionPolicy::from_options(r),
                    Contains("precision.reduce_dtype 'int8' is not one of fp32, bf16, fp16"));

  PrecisionOptions s;
  s.param_dtype = "fp16";
  s.loss_scaler.growth_factor = 1.0;
  CHECK_THROWS_WITH(PrecisionPolicy::from_options(s),
                    Contains("precision.loss_scaler.growth_factor must be > 1"));
}

TEST_CASE("PrecisionPolicy rules: compute follows param, master forced for bf16/fp16",
          "[precision]") {
  const PrecisionPolicy defaults = PrecisionPolicy::from_options(PrecisionOptions{});
  CHECK(defaults.param == Precision::kFloat32);
  CHECK(defaults.compute == Precision::kFloat32);
  CHECK(defaults.reduce == Precision::kFloat32);
  CHECK(defaults.master_weights);
  CHECK_FALSE(defaults.needs_loss_scaler());

  // fp32 keeps the option as given.
  CHECK_FALSE(policy_for("fp32", "fp32", false).master_weights);

  const PrecisionPolicy bf16 = policy_for("bfloat16", "bf16", false);
  CHECK(bf16.param == Precision::kBFloat16);
  CHECK(bf16.compute == Precision::kBFloat16);
  CHECK(bf16.reduce == Precision::kBFloat16);
  CHECK(bf16.master_weights);  // forced
  CHECK_FALSE(bf16.needs_loss_scaler());

  const PrecisionPolicy fp16 = policy_for("fp16", "fp32", false);
  CHECK(fp16.param == Precision::kFloat16);
  CHECK(fp16.compute == Precision::kFloat16);
  CHECK(fp16.reduce == Precision::kFloat32);
  CHECK(fp16.master_weights);  // forced
  CHECK(fp16.needs_loss_scaler());

  // Any reduce dtype is allowed, and a reduce dtype alone does not need a scaler.
  const PrecisionPolicy fp32_fp16_reduce = policy_for("fp32", "float16");
  CHECK(fp32_fp16_reduce.reduce == Precision::kFloat16);
  CHECK_FALSE(fp32_fp16_reduce.needs_loss_scaler());

  PrecisionPolicy manual;
  manual.compute = Precision::kFloat16;
  CHECK(manual.needs_loss_scaler());

  CHECK(fp16.describe() == "param=fp16 compute=fp16 reduce=fp32 master_weights=on loss_scaler=on");
  CHECK(defaults.describe() ==
        "param=fp32 compute=fp32 reduce=fp32 master_weights=on loss_scaler=off");
}

TEST_CASE("model_state_bytes_per_element counts params, grads, master and moments", "[precision]") {
  const ModelStateBytes fp32 = model_state_bytes_per_element(policy_for("fp32"));
  CHECK(fp32.params == 4);
  CHECK(fp32.grads == 4);
  CHECK(fp32.master == 0);
  CHECK(fp32.moments == 8);
  CHECK(fp32.total() == 16);

  for (const char* low : {"bf16", "fp16"}) {
    const ModelStateBytes b = model_state_bytes_per_element(policy_for(low));
    CHECK(b.params == 2);
    CHECK(b.grads == 2);
    CHECK(b.master == 4);
    CHECK(b.moments == 8);
    CHECK(b.total() == 16);  // ZeRO's 16 * Psi
  }

  // The reduce dtype is transient communication, not model state.
  CHECK(model_state_bytes_per_element(policy_for("bf16", "bf16")).total() == 16);
}

TEST_CASE("LossScalerOptions::validate names the bad key", "[precision]") {
  CHECK_NOTHROW(LossScalerOptions{}.validate());
  CHECK_NOTHROW(small_options().validate());

  auto expect = [](LossScalerOptions o, const std::string& fragment) {
    CHECK_THROWS_AS(o.validate(), ConfigError);
    CHECK_THROWS_WITH(o.validate(), Contains(fragment));
    CHECK_THROWS_AS(DynamicLossScaler(o), ConfigError);
  };
  LossScalerOptions o = small_options();
  o.growth_factor = 1.0;
  expect(o, "precision.loss_scaler.growth_factor must be > 1");
  o = small_options();
  o.backoff_factor = 1.0;
  expect(o, "precision.loss_scaler.backoff_factor");
  o = small_options();
  o.backoff_factor = 0.0;
  expect(o, "precision.loss_scaler.backoff_factor");
  o = small_options();
  o.growth_interval = 0;
  expect(o, "precision.loss_scaler.growth_interval must be >= 1");
  o = small_options();
  o.min_scale = 0.0;
  expect(o, "precision.loss_scaler.min_scale must be > 0");
  o = small_options();
  o.max_scale = 0.5;
  expect(o, "precision.loss_scaler.max_scale");
  o = small_options();
  o.initial_scale = 64.0;
  expect(o, "precision.loss_scaler.initial_scale");
  o = small_options();
  o.initial_scale = 0.5;
  expect(o, "precision.loss_scaler.initial_scale");
}

TEST_CASE("DynamicLossScaler starts at the initial scale", "[precision]") {
  const DynamicLossScaler defaults{LossScalerOptions{}};
  CHECK(defaults.enabled());
  CHECK(defaults.scale() == 65536.0);
  CHECK(defaults.inverse_scale() == 1.0 / 65536.0);
  CHECK(defaults.skipped_steps() == 0);
  CHECK(defaults.clean_steps_since_change() == 0);
}

TEST_CASE("DynamicLossScaler halves and skips on overflow, never below min_scale", "[precision]") {
  DynamicLossScaler s(small_options());
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 4.0);
  CHECK(s.skipped_steps() == 1);
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 2.0);
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 1.0);
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 1.0);  // clamped at min_scale
  CHECK(s.skipped_steps() == 4);
  CHECK(s.inverse_scale() == 1.0);

  LossScalerOptions o = small_options();
  o.min_scale = 3.0;
  DynamicLossScaler clamped(o);
  CHECK_FALSE(clamped.update(true));
  CHECK(clamped.scale() == 4.0);
  CHECK_FALSE(clamped.update(true));
  CHECK(clamped.scale() == 3.0);  // max(3, 2)
}

TEST_CASE("DynamicLossScaler grows exactly after growth_interval clean steps", "[precision]") {
  DynamicLossScaler s(small_options());  // interval 3, scale 8
  CHECK(s.update(false));
  CHECK(s.update(false));
  CHECK(s.scale() == 8.0);  // not before the interval
  CHECK(s.clean_steps_since_change() == 2);
  CHECK(s.update(false));
  CHECK(s.scale() == 16.0);
  CHECK(s.clean_steps_since_change() == 0);
  CHECK(s.skipped_steps() == 0);

  // The default options grow after exactly 2000 clean steps.
  DynamicLossScaler d{LossScalerOptions{}};
  for (int i = 0; i < 1999; ++i) REQUIRE(d.update(false));
  CHECK(d.scale() == 65536.0);
  CHECK(d.clean_steps_since_change() == 1999);
  CHECK(d.update(false));
  CHECK(d.scale() == 131072.0);
  CHECK(d.clean_steps_since_change() == 0);
}

TEST_CASE("DynamicLossScaler resets the clean-step counter after an overflow", "[precision]") {
  DynamicLossScaler s(small_options());  // interval 3, scale 8
  CHECK(s.update(false));
  CHECK(s.update(false));
  CHECK_FALSE(s.update(true));  // would have been the growing step
  CHECK(s.scale() == 4.0);
  CHECK(s.clean_steps_since_change() == 0);
  CHECK(s.update(false));
  CHECK(s.update(false));
  CHECK(s.scale() == 4.0);  // only 2 clean steps since the overflow
  CHECK(s.update(false));
  CHECK(s.scale() == 8.0);
  CHECK(s.skipped_steps() == 1);
}

TEST_CASE("DynamicLossScaler caps growth at max_scale", "[precision]") {
  LossScalerOptions o = small_options();
  o.max_scale = 20.0;
  o.growth_interval = 1;
  DynamicLossScaler s(o);  // scale 8
  CHECK(s.update(false));
  CHECK(s.scale() == 16.0);
  CHECK(s.update(false));
  CHECK(s.scale() == 20.0);  // min(20, 32)
  CHECK(s.update(false));
  CHECK(s.scale() == 20.0);
  CHECK(s.clean_steps_since_change() == 0);
}

TEST_CASE("A disabled DynamicLossScaler never changes but still counts skips", "[precision]") {
  DynamicLossScaler s(small_options(), /*enabled=*/false);
  CHECK_FALSE(s.enabled());
  CHECK(s.scale() == 1.0);
  CHECK(s.inverse_scale() == 1.0);
  for (int i = 0; i < 10; ++i) CHECK(s.update(false));
  CHECK(s.scale() == 1.0);
  CHECK(s.clean_steps_since_change() == 0);
  CHECK_FALSE(s.update(true));
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 1.0);
  CHECK(s.skipped_steps() == 2);

  // A checkpointed scale does not re-enable scaling; the skip count is restored.
  s.set_state(LossScalerState{512.0, 7, 5});
  CHECK(s.scale() == 1.0);
  CHECK(s.clean_steps_since_change() == 0);
  CHECK(s.skipped_steps() == 5);
}

TEST_CASE("DynamicLossScaler state round trips through a checkpoint", "[precision]") {
  DynamicLossScaler a(small_options());
  a.update(false);
  a.update(true);
  a.update(false);
  a.update(false);
  const LossScalerState saved = a.state();
  CHECK(saved.scale == 4.0);
  CHECK(saved.clean_steps == 2);
  CHECK(saved.skipped_steps == 1);

  DynamicLossScaler b(small_options());
  b.set_state(saved);
  CHECK(b.state() == saved);
  CHECK(b.scale() == 4.0);
  CHECK(b.clean_steps_since_change() == 2);
  CHECK(b.skipped_steps() == 1);

  // Both continue identically.
  for (bool overflow : {false, false, true, false, false, false, false}) {
    CHECK(a.update(overflow) == b.update(overflow));
    CHECK(a.state() == b.state());
  }

  // A counter past a smaller growth_interval grows on the next clean step.
  DynamicLossScaler c(small_options());
  c.set_state(LossScalerState{8.0, 10, 0});
  CHECK(c.update(false));
  CHECK(c.scale() == 16.0);
  CHECK(c.clean_steps_since_change() == 0);
}

TEST_CASE("DynamicLossScaler::set_state rejects a corrupt state", "[precision]") {
  DynamicLossScaler s(small_options());
  const LossScalerState before = s.state();
  CHECK_THROWS_AS(s.set_state(LossScalerState{0.0, 0, 0}), CheckpointError);
  CHECK_THROWS_AS(s.set_state(LossScalerState{-2.0, 0, 0}), CheckpointError);
  CHECK_THROWS_AS(s.set_state(LossScalerState{std::numeric_limits<double>::infinity(), 0, 0}),
                  CheckpointError);
  CHECK_THROWS_AS(s.set_state(LossScalerState{8.0, -1, 0}), CheckpointError);
  CHECK_THROWS_AS(s.set_state(LossScalerState{8.0, 0, -1}), CheckpointError);
  CHECK_THROWS_WITH(s.set_state(LossScalerState{0.0, 0, 0}), Contains("scale"));
  CHECK(s.state() == before);  // unchanged after a rejected state
}

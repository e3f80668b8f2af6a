// Fault plans: parsing of the DST_FAULT spec and which rank/step/point they fire at.
#include <catch2/catch.hpp>

#include "deepseek_train/core/error.h"
#include "deepseek_train/core/fault_injection.h"

using dst::FaultPlan;

TEST_CASE("fault plans parse and target one rank, step and point", "[core]") {
  CHECK(FaultPlan::parse("", "DST_FAULT").empty());
  const FaultPlan kill = FaultPlan::parse("kill:rank=1,step=4,point=save", "DST_FAULT");
  CHECK(kill.action() == FaultPlan::Action::kKill);
  CHECK(kill.targets(1, 4));
  CHECK_FALSE(kill.targets(0, 4));
  CHECK_FALSE(kill.targets(1, 3));
  kill.at(1, 4, "backward");  // another point: returns
  CHECK(kill.describe() == "kill on rank 1 at step 4, point save");

  const FaultPlan sleep = FaultPlan::parse("sleep:step=2,point=step_begin,seconds=0", "DST_FAULT");
  CHECK(sleep.targets(0, 2));
  CHECK(sleep.targets(5, 2));
  sleep.at(3, 2, "step_begin");  // sleeps 0 s

  const FaultPlan nan = FaultPlan::parse("nan:step=3,parameter=model.norm.weight", "DST_FAULT");
  CHECK(nan.action() == FaultPlan::Action::kNanGradient);
  CHECK(nan.parameter() == "model.norm.weight");
}

TEST_CASE("bad fault specs are one-line errors naming the source", "[core]") {
  using Catch::Contains;
  auto error_of = [](const std::string& spec) {
    try {
      FaultPlan::parse(spec, "DST_FAULT");
    } catch (const dst::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(error_of("explode:step=1"), Contains("DST_FAULT: unknown fault 'explode'"));
  CHECK_THAT(error_of("kill:step=1"), Contains("kill needs point=P"));
  CHECK_THAT(error_of("kill:step=x,point=save"), Contains("step 'x' is not an integer"));
  CHECK_THAT(error_of("kill:point=save"), Contains("needs step=S"));
  CHECK_THAT(error_of("kill:step=1,point=lunch"), Contains("unknown point 'lunch'"));
  CHECK_THAT(error_of("sleep:step=1,point=save,seconds=-1"), Contains("not a non-negative"));
  CHECK_THAT(error_of("nan:step=1"), Contains("nan needs parameter=NAME"));
  CHECK_THAT(error_of("kill:step=1,point=save,color=red"), Contains("unknown key 'color'"));
}

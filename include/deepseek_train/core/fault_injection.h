// Fault injection for end-to-end tests of the failure paths: a FaultPlan parsed from a spec (the
// CLI reads it from the DST_FAULT environment variable) kills, stalls or poisons one rank at an
// exact point of a real run, so tests can check the watchdog, kill-and-resume and the non-finite
// guard deterministically. An empty plan does nothing. Torch-free.
//
// Spec: "ACTION:key=value,key=value". Actions and keys:
//   kill:rank=R,step=S,point=P          SIGKILL this process (no cleanup, like kill -9)
//   sleep:rank=R,step=S,point=P,seconds=T   sleep T seconds, then continue
//   nan:rank=R,step=S,parameter=NAME    the parameter's gradient becomes NaN in step S
// rank defaults to every rank. Points, in the order a step reaches them:
//   step_begin  before the step's first forward
//   backward    after the step's backward passes, before the optimizer
//   step_end    after the optimizer update
//   save        in a checkpoint of step S, after this rank's file is written (before commit)
//   commit      in a checkpoint of step S on rank 0, after the manifest, before the rename
#pragma once

#include <cstdint>
#include <string>

namespace dst {

class FaultPlan {
 public:
  enum class Action { kNone, kKill, kSleep, kNanGradient };

  FaultPlan() = default;
  // Throws ConfigError naming `source` (e.g. "DST_FAULT") and the offending part.
  static FaultPlan parse(const std::string& spec, const std::string& source);

  Action action() const { return action_; }
  bool empty() const { return action_ == Action::kNone; }
  // Whether this plan targets `rank` at `step` (any point).
  bool targets(int rank, int64_t step) const;
  // Kills or sleeps when this is the plan's rank, step and point; otherwise returns at once.
  void at(int rank, int64_t step, const char* point) const;
  const std::string& parameter() const { return parameter_; }
  std::string describe() const;

 private:
  Action action_ = Action::kNone;
  int rank_ = -1;  // -1: every rank
  int64_t step_ = 0;
  std::string point_;
  double seconds_ = 0.0;
  std::string parameter_;
};

}  // namespace dst

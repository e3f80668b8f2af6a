#include "deepseek_train/pipeline/schedule.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "deepseek_train/core/error.h"

namespace dst {

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "gpipe") return ScheduleKind::kGPipe;
  if (name == "1f1b") return ScheduleKind::kOneFOneB;
  if (name == "interleaved_1f1b" || name == "interleaved") return ScheduleKind::kInterleaved1F1B;
  DST_THROW(ConfigError,
            "parallel.schedule '" << name << "' is not one of gpipe, 1f1b, interleaved_1f1b");
}

std::string to_string(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kGPipe:
      return "gpipe";
    case ScheduleKind::kOneFOneB:
      return "1f1b";
    case ScheduleKind::kInterleaved1F1B:
      return "interleaved_1f1b";
  }
  return "?";
}

bool Action::operator==(const Action& other) const {
  return type == other.type && micro_batch == other.micro_batch && chunk == other.chunk &&
         peer == other.peer;
}

std::string to_string(const Action& action) {
  const char* name = "?";
  const char* arrow = nullptr;  // "->" for sends, "<-" for receives, none for compute
  switch (action.type) {
    case ActionType::kRecvActivation:
      name = "RecvAct", arrow = "<-";
      break;
    case ActionType::kForward:
      name = "F";
      break;
    case ActionType::kSendActivation:
      name = "SendAct", arrow = "->";
      break;
    case ActionType::kRecvGrad:
      name = "RecvGrad", arrow = "<-";
      break;
    case ActionType::kBackward:
      name = "B";
      break;
    case ActionType::kSendGrad:
      name = "SendGrad", arrow = "->";
      break;
  }
  std::ostringstream out;
  out << name << "(mb=" << action.micro_batch << ",chunk=" << action.chunk;
  if (arrow) out << arrow << "rank " << action.peer;
  out << ")";
  return out.str();
}

// ---------------------------------------------------------------------------------------------
// Spec
// ---------------------------------------------------------------------------------------------

int virtual_stage_of(const ScheduleSpec& spec, int rank, int chunk) {
  return chunk * spec.stages + rank;
}

int rank_of_virtual_stage(const ScheduleSpec& spec, int stage) { return stage % spec.stages; }

void validate(const ScheduleSpec& spec) {
  const std::string kind = to_string(spec.kind);
  DST_CHECK(spec.stages >= 1, ConfigError, "parallel.pp must be at least 1, got " << spec.stages);
  DST_CHECK(spec.micro_batches >= 1, ConfigError,
            "parallel.micro_batches must be at least 1, got " << spec.micro_batches);
  DST_CHECK(spec.virtual_stages >= 1, ConfigError,
            "parallel.virtual_stages must be at least 1, got " << spec.virtual_stages);
  if (spec.kind != ScheduleKind::kInterleaved1F1B) {
    DST_CHECK(spec.virtual_stages == 1, ConfigError,
              "parallel.virtual_stages is " << spec.virtual_stages << " but parallel.schedule "
                                            << kind
                                            << " runs one model chunk per rank; use "
                                               "interleaved_1f1b or virtual_stages 1");
    return;
  }
  DST_CHECK(spec.virtual_stages >= 2, ConfigError,
            "parallel.virtual_stages must be at least 2 for interleaved_1f1b, got "
                << spec.virtual_stages << " (use 1f1b for one model chunk per rank)");
  DST_CHECK(spec.stages >= 2, ConfigError,
            "parallel.pp must be at least 2 for interleaved_1f1b, got "
                << spec.stages << " (one rank has no pipeline bubble to shrink; use 1f1b)");
  DST_CHECK(spec.micro_batches % spec.stages == 0, ConfigError,
            "parallel.micro_batches (" << spec.micro_batches
                                       << ") must be a multiple of parallel.pp (" << spec.stages
                                       << ") for interleaved_1f1b");
}

// ---------------------------------------------------------------------------------------------
// Building the lists
// ---------------------------------------------------------------------------------------------

namespace {

// One compute action of a rank, before its sends and receives are added.
struct ComputeStep {
  bool forward;
  int micro_batch;
  int chunk;
};

// The (micro-batch, chunk) pairs of a rank in the order its forwards run, as in Megatron-LM:
// micro-batches in groups of p; each group goes through chunk 0, 1, ..., v-1 before the next
// group starts. With v == 1 this is simply micro-batch 0..m-1. validate() makes m a multiple of
// p when v > 1, so every group is full: the k-th pair is chunk (k / p) % v of micro-batch
// (k / (p * v)) * p + k % p. Backwards use the same order with the chunks reversed (the last
// chunk of a group must finish its backward before the earlier chunks can start theirs).
std::vector<ComputeStep> compute_order(const ScheduleSpec& spec, bool forward) {
  const int p = spec.stages, m = spec.micro_batches, v = spec.virtual_stages;
  std::vector<ComputeStep> order;
  order.reserve(static_cast<size_t>(m) * v);
  for (int group_start = 0; group_start < m; group_start += p) {
    const int group_end = std::min(group_start + p, m);
    for (int k = 0; k < v; ++k) {
      const int chunk = forward ? k : v - 1 - k;
      for (int mb = group_start; mb < group_end; ++mb) order.push_back({forward, mb, chunk});
    }
  }
  return order;
}

// Forwards a rank runs before its first backward.
int warmup_forwards(const ScheduleSpec& spec, int rank) {
  const int p = spec.stages, m = spec.micro_batches, v = spec.virtual_stages;
  switch (spec.kind) {
    case ScheduleKind::kGPipe:
      return m;
    case ScheduleKind::kOneFOneB:
      // The first backward reaches rank r after the first forward has gone through the
      // p - r - 1 ranks after it, so r fills that time with forwards of later micro-batches.
      return std::min(p - rank - 1, m);
    case ScheduleKind::kInterleaved1F1B:
      // Megatron-LM: (v - 1) groups of p forwards before the first group reaches the last chunk,
      // plus two forwards per rank downstream of this one. Under simulate()'s buffered sends one
      // per downstream rank would already give the minimal bubble; the second is Megatron's slack
      // for sends and receives that are posted together and take time, at the cost of p - r - 1
      // more activations in flight.
      return std::min((p - rank - 1) * 2 + (v - 1) * p, m * v);
  }
  return m * v;
}

// Warm-up forwards, then one forward + one backward at a time, then the remaining backwards.
std::vector<ComputeStep> one_forward_one_backward(const std::vector<ComputeStep>& forwards,
                                                  const std::vector<ComputeStep>& backwards,
                                                  int warmup) {
  const int total = static_cast<int>(forwards.size());
  std::vector<ComputeStep> steps(forwards.begin(), forwards.begin() + warmup);
  for (int k = 0; k + warmup < total; ++k) {
    steps.push_back(forwards[k + warmup]);
    steps.push_back(backwards[k]);
  }
  for (int k = total - warmup; k < total; ++k) steps.push_back(backwards[k]);
  return steps;
}

// Appends `step` with the receive it needs before it and the send of its result after it.
void append_with_communication(const ScheduleSpec& spec, int rank, const ComputeStep& step,
                               std::vector<Action>& actions) {
  const int stage = virtual_stage_of(spec, rank, step.chunk);
  const bool first = stage == 0;
  const bool last = stage == spec.num_virtual_stages() - 1;
  const int previous_rank = first ? -1 : rank_of_virtual_stage(spec, stage - 1);
  const int next_rank = last ? -1 : rank_of_virtual_stage(spec, stage + 1);
  const int mb = step.micro_batch, chunk = step.chunk;
  if (step.forward) {
    if (!first) actions.push_back({ActionType::kRecvActivation, mb, chunk, previous_rank});
    actions.push_back({ActionType::kForward, mb, chunk});
    if (!last) actions.push_back({ActionType::kSendActivation, mb, chunk, next_rank});
  } else {
    if (!last) actions.push_back({ActionType::kRecvGrad, mb, chunk, next_rank});
    actions.push_back({ActionType::kBackward, mb, chunk});
    if (!first) actions.push_back({ActionType::kSendGrad, mb, chunk, previous_rank});
  }
}

}  // namespace

std::vector<Action> build_schedule(const ScheduleSpec& spec, int rank) {
  validate(spec);
  DST_CHECK(rank >= 0 && rank < spec.stages, ConfigError,
            "pipeline rank " << rank << " is outside parallel.pp " << spec.stages);
  const std::vector<ComputeStep> steps =
      one_forward_one_backward(compute_order(spec, /*forward=*/true),
                               compute_order(spec, /*forward=*/false), warmup_forwards(spec, rank));
  std::vector<Action> actions;
  for (const ComputeStep& step : steps) append_with_communication(spec, rank, step, actions);
  return actions;
}

std::vector<std::vector<Action>> build_all_schedules(const ScheduleSpec& spec) {
  std::vector<std::vector<Action>> schedules;
  for (int rank = 0; rank < spec.stages; ++rank) schedules.push_back(build_schedule(spec, rank));
  return schedules;
}

// ---------------------------------------------------------------------------------------------
// Simulation
// ---------------------------------------------------------------------------------------------

namespace {

bool is_send(ActionType type) {
  return type == ActionType::kSendActivation || type == ActionType::kSendGrad;
}
bool is_recv(ActionType type) {
  return type == ActionType::kRecvActivation || type == ActionType::kRecvGrad;
}
bool is_activation_message(ActionType type) {
  return type == ActionType::kSendActivation || type == ActionType::kRecvActivation;
}

// The virtual stage on the other side of a send/recv on `stage`: activations flow to stage + 1
// and come from stage - 1, grads flow to stage - 1 and come from stage + 1.
int peer_stage(ActionType type, int stage) {
  switch (type) {
    case ActionType::kSendActivation:
    case ActionType::kRecvGrad:
      return stage + 1;
    case ActionType::kRecvActivation:
    case ActionType::kSendGrad:
      return stage - 1;
    default:
      return -1;
  }
}

// Throws InternalError for a list that is wrong whatever the timing (see simulate()).
void check_well_formed(const std::vector<std::vector<Action>>& schedules,
                       const ScheduleSpec& spec) {
  const int p = spec.stages, m = spec.micro_batches, v = spec.virtual_stages;
  const int num_stages = spec.num_virtual_stages();
  DST_CHECK(static_cast<int>(schedules.size()) == p, InternalError,
            "simulate: got " << schedules.size() << " action lists for " << p << " pipeline ranks");
  for (int rank = 0; rank < p; ++rank) {
    std::set<std::tuple<ActionType, int, int>> seen;
    for (size_t i = 0; i < schedules[rank].size(); ++i) {
      const Action& a = schedules[rank][i];
      const std::string where =
          "simulate: rank " + std::to_string(rank) + " action " + std::to_string(i) + " ";
      DST_CHECK(a.micro_batch >= 0 && a.micro_batch < m && a.chunk >= 0 && a.chunk < v,
                InternalError, where << to_string(a) << " is outside m=" << m << ", v=" << v);
      DST_CHECK(seen.insert({a.type, a.micro_batch, a.chunk}).second, InternalError,
                where << to_string(a) << " is a duplicate");
      if (!is_send(a.type) && !is_recv(a.type)) {
        DST_CHECK(a.peer == -1, InternalError, where << to_string(a) << " has a peer");
        continue;
      }
      const int other = peer_stage(a.type, virtual_stage_of(spec, rank, a.chunk));
      DST_CHECK(other >= 0 && other < num_stages, InternalError,
                where << to_string(a) << " is on an edge past the first or last virtual stage");
      DST_CHECK(a.peer == rank_of_virtual_stage(spec, other), InternalError,
                where << to_string(a) << " should name rank " << rank_of_virtual_stage(spec, other)
                      << " (virtual stage " << other << ")");
    }
    for (int mb = 0; mb < m; ++mb) {
      for (int chunk = 0; chunk < v; ++chunk) {
        for (ActionType type : {ActionType::kForward, ActionType::kBackward}) {
          const Action expected{type, mb, chunk};
          DST_CHECK(seen.count({type, mb, chunk}) == 1, InternalError,
                    "simulate: rank " << rank << " has no " << to_string(expected));
        }
      }
    }
  }
}

// A message between virtual stages: direction, micro-batch and the sending virtual stage.
using MessageKey = std::tuple<bool /*activation*/, int /*micro_batch*/, int /*from_stage*/>;

// Executes the lists in dataflow order. Each rank has a clock; a compute action advances it by its
// cost, a receive moves it up to the time the matching send ran. Since every action runs as soon
// as its inputs exist, the clocks do not depend on the order in which ranks are visited.
class Simulator {
 public:
  Simulator(const std::vector<std::vector<Action>>& schedules, const ScheduleSpec& spec,
            double forward_cost, double backward_cost)
      : schedules_(schedules),
        spec_(spec),
        forward_cost_(forward_cost),
        backward_cost_(backward_cost),
        ranks_(schedules.size()) {}

  SimulationResult run() {
    bool progress = true;
    while (progress) {
      progress = false;
      for (int rank = 0; rank < spec_.stages; ++rank) {
        while (!finished(rank) && try_execute(rank)) progress = true;
      }
    }
    SimulationResult result;
    for (int rank = 0; rank < spec_.stages; ++rank) {
      if (finished(rank)) continue;
      result.deadlock = true;
      result.deadlock_report += stuck_description(rank) + "\n";
    }
    if (!result.deadlock) fill_timing(result);
    return result;
  }

 private:
  struct RankState {
    size_t next = 0;   // index of the next action to run
    double clock = 0;  // time at which the previous action finished
    double busy = 0;   // total compute time
    std::set<std::pair<int, int>> forwarded, backwarded;  // (mb, chunk) computed
    std::set<std::pair<int, int>> activations, grads;     // (mb, chunk) received
  };

  bool finished(int rank) const { return ranks_[rank].next == schedules_[rank].size(); }

  // The message a send produces or a receive consumes.
  MessageKey message_of(int rank, const Action& a) const {
    const int stage = virtual_stage_of(spec_, rank, a.chunk);
    const int from_stage = is_send(a.type) ? stage : peer_stage(a.type, stage);
    return {is_activation_message(a.type), a.micro_batch, from_stage};
  }

  // Why the next action of `rank` cannot run yet, or "" when it can.
  std::string missing_input(int rank) const {
    const RankState& state = ranks_[rank];
    const Action& a = schedules_[rank][state.next];
    const std::pair<int, int> item{a.micro_batch, a.chunk};
    const int stage = virtual_stage_of(spec_, rank, a.chunk);
    switch (a.type) {
      case ActionType::kRecvActivation:
      case ActionType::kRecvGrad:
        return sent_.count(message_of(rank, a)) ? "" : "the matching send has not run on the peer";
      case ActionType::kForward:
        if (stage != 0 && !state.activations.count(item)) return "its activation was not received";
        return "";
      case ActionType::kBackward:
        if (!state.forwarded.count(item)) return "its Forward has not run";
        if (stage != spec_.num_virtual_stages() - 1 && !state.grads.count(item))
          return "its grad was not received";
        return "";
      case ActionType::kSendActivation:
        return state.forwarded.count(item) ? "" : "its Forward has not run";
      case ActionType::kSendGrad:
        return state.backwarded.count(item) ? "" : "its Backward has not run";
    }
    return "";
  }

  // Runs the next action of `rank` if its inputs exist; returns whether it ran.
  bool try_execute(int rank) {
    if (!missing_input(rank).empty()) return false;
    RankState& state = ranks_[rank];
    const Action& a = schedules_[rank][state.next];
    const std::pair<int, int> item{a.micro_batch, a.chunk};
    switch (a.type) {
      case ActionType::kRecvActivation:
      case ActionType::kRecvGrad:
        state.clock = std::max(state.clock, sent_.at(message_of(rank, a)));
        received_.insert(message_of(rank, a));
        (a.type == ActionType::kRecvActivation ? state.activations : state.grads).insert(item);
        break;
      case ActionType::kForward:
        state.clock += forward_cost_, state.busy += forward_cost_;
        state.forwarded.insert(item);
        break;
      case ActionType::kBackward:
        state.clock += backward_cost_, state.busy += backward_cost_;
        state.backwarded.insert(item);
        break;
      case ActionType::kSendActivation:
      case ActionType::kSendGrad:
        sent_[message_of(rank, a)] = state.clock;
        break;
    }
    ++state.next;
    return true;
  }

  std::string stuck_description(int rank) const {
    const RankState& state = ranks_[rank];
    std::ostringstream out;
    out << "rank " << rank << " is stuck at action " << state.next << " "
        << to_string(schedules_[rank][state.next]) << ": " << missing_input(rank);
    return out.str();
  }

  void fill_timing(SimulationResult& result) const {
    // Every consumer waits for its message, so a finished run has received every send.
    for (const auto& [key, time] : sent_) {
      (void)time;
      DST_ASSERT(received_.count(key), "a send finished without being received");
    }
    for (const RankState& state : ranks_) result.makespan = std::max(result.makespan, state.clock);
    double max_idle = 0;
    for (const RankState& state : ranks_) {
      result.idle_time.push_back(result.makespan - state.busy);
      max_idle = std::max(max_idle, result.idle_time.back());
    }
    const double micro_batch_work = spec_.virtual_stages * (forward_cost_ + backward_cost_);
    result.bubble_slots = max_idle / micro_batch_work;
    result.bubble_fraction = max_idle / (spec_.micro_batches * micro_batch_work);
  }

  const std::vector<std::vector<Action>>& schedules_;
  const ScheduleSpec& spec_;
  const double forward_cost_, backward_cost_;
  std::vector<RankState> ranks_;
  std::map<MessageKey, double> sent_;  // message -> time its send ran
  std::set<MessageKey> received_;
};

}  // namespace

SimulationResult simulate(const std::vector<std::vector<Action>>& schedules,
                          const ScheduleSpec& spec, double forward_cost, double backward_cost) {
  validate(spec);
  DST_CHECK(forward_cost >= 0 && backward_cost >= 0 && forward_cost + backward_cost > 0,
            ConfigError,
            "simulate: forward_cost (" << forward_cost << ") and backward_cost (" << backward_cost
                                       << ") must be >= 0 with a positive sum");
  check_well_formed(schedules, spec);
  return Simulator(schedules, spec, forward_cost, backward_cost).run();
}

}  // namespace dst

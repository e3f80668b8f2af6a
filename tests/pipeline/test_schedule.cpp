#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "deepseek_train/core/error.h"
#include "deepseek_train/pipeline/schedule.h"

using namespace dst;

namespace {

const ScheduleKind kAllKinds[] = {ScheduleKind::kGPipe, ScheduleKind::kOneFOneB,
                                  ScheduleKind::kInterleaved1F1B};

// The documented rule of validate(), restated independently.
bool expected_valid(const ScheduleSpec& s) {
  if (s.kind != ScheduleKind::kInterleaved1F1B) return s.virtual_stages == 1;
  return s.virtual_stages >= 2 && s.stages >= 2 && s.micro_batches % s.stages == 0;
}

// Every valid spec with p in {1, 2, 4}, m in {1, 2, 4, 8}, v in {1, 2, 4}.
std::vector<ScheduleSpec> valid_specs() {
  std::vector<ScheduleSpec> specs;
  for (ScheduleKind kind : kAllKinds)
    for (int p : {1, 2, 4})
      for (int m : {1, 2, 4, 8})
        for (int v : {1, 2, 4}) {
          const ScheduleSpec spec{kind, p, m, v};
          if (expected_valid(spec)) specs.push_back(spec);
        }
  return specs;
}

std::string describe(const ScheduleSpec& s) {
  return to_string(s.kind) + " p=" + std::to_string(s.stages) +
         " m=" + std::to_string(s.micro_batches) + " v=" + std::to_string(s.virtual_stages);
}

bool is_compute(ActionType type) {
  return type == ActionType::kForward || type == ActionType::kBackward;
}

// Largest number of (mb, chunk) whose Forward has run and Backward has not, along a rank's list.
int peak_in_flight(const std::vector<Action>& actions) {
  int in_flight = 0, peak = 0;
  for (const Action& a : actions) {
    if (a.type == ActionType::kForward) peak = std::max(peak, ++in_flight);
    if (a.type == ActionType::kBackward) --in_flight;
  }
  return peak;
}

// The compute actions of a list, in order.
std::vector<Action> compute_actions(const std::vector<Action>& actions) {
  std::vector<Action> compute;
  for (const Action& a : actions)
    if (is_compute(a.type)) compute.push_back(a);
  return compute;
}

// Forwards a rank runs before its first backward.
int forwards_before_first_backward(const std::vector<Action>& actions) {
  int count = 0;
  for (const Action& a : actions) {
    if (a.type == ActionType::kBackward) break;
    if (a.type == ActionType::kForward) ++count;
  }
  return count;
}

// A point-to-point message seen from outside: (activation?, mb, from stage, to stage, from rank,
// to rank).
using Message = std::tuple<bool, int, int, int, int, int>;

}  // namespace

TEST_CASE("pipeline: schedule kind names round-trip and a bad name lists the valid ones",
          "[pipeline]") {
  for (ScheduleKind kind : kAllKinds) CHECK(parse_schedule_kind(to_string(kind)) == kind);
  CHECK(to_string(ScheduleKind::kGPipe) == "gpipe");
  CHECK(to_string(ScheduleKind::kOneFOneB) == "1f1b");
  CHECK(to_string(ScheduleKind::kInterleaved1F1B) == "interleaved_1f1b");
  CHECK(parse_schedule_kind("interleaved") == ScheduleKind::kInterleaved1F1B);
  CHECK_THROWS_AS(parse_schedule_kind("1F1B"), ConfigError);
  CHECK_THROWS_WITH(
      parse_schedule_kind("pipedream"),
      Catch::Contains("parallel.schedule 'pipedream' is not one of gpipe, 1f1b, interleaved_1f1b"));
}

TEST_CASE("pipeline: actions print as the runtime log shows them", "[pipeline]") {
  CHECK(to_string(Action{ActionType::kForward, 3, 1}) == "F(mb=3,chunk=1)");
  CHECK(to_string(Action{ActionType::kBackward, 0, 0}) == "B(mb=0,chunk=0)");
  CHECK(to_string(Action{ActionType::kSendActivation, 3, 1, 0}) == "SendAct(mb=3,chunk=1->rank 0)");
  CHECK(to_string(Action{ActionType::kRecvActivation, 2, 0, 3}) == "RecvAct(mb=2,chunk=0<-rank 3)");
  CHECK(to_string(Action{ActionType::kSendGrad, 1, 1, 2}) == "SendGrad(mb=1,chunk=1->rank 2)");
  CHECK(to_string(Action{ActionType::kRecvGrad, 1, 0, 1}) == "RecvGrad(mb=1,chunk=0<-rank 1)");
  CHECK(Action{ActionType::kForward, 1, 0} == Action{ActionType::kForward, 1, 0});
  CHECK(Action{ActionType::kRecvGrad, 1, 0, 1} != Action{ActionType::kRecvGrad, 1, 0, 2});
}

TEST_CASE("pipeline: validate accepts exactly the supported layouts and names the key otherwise",
          "[pipeline]") {
  for (ScheduleKind kind : kAllKinds)
    for (int p : {1, 2, 3, 4})
      for (int m : {1, 2, 3, 4, 6, 8})
        for (int v : {1, 2, 3, 4}) {
          const ScheduleSpec spec{kind, p, m, v};
          INFO(describe(spec));
          if (expected_valid(spec)) {
            CHECK_NOTHROW(validate(spec));
            CHECK_NOTHROW(build_all_schedules(spec));
          } else {
            CHECK_THROWS_AS(validate(spec), ConfigError);
            CHECK_THROWS_AS(build_schedule(spec, 0), ConfigError);
          }
        }
  using K = ScheduleKind;
  CHECK_THROWS_WITH(validate({K::kOneFOneB, 0, 4}),
                    Catch::Contains("parallel.pp must be at least 1, got 0"));
  CHECK_THROWS_WITH(validate({K::kGPipe, 2, 0}),
                    Catch::Contains("parallel.micro_batches must be at least 1, got 0"));
  CHECK_THROWS_WITH(validate({K::kInterleaved1F1B, 2, 4, 0}),
                    Catch::Contains("parallel.virtual_stages must be at least 1, got 0"));
  CHECK_THROWS_WITH(validate({K::kOneFOneB, 2, 4, 2}),
                    Catch::Contains("parallel.virtual_stages is 2 but parallel.schedule 1f1b"));
  CHECK_THROWS_WITH(validate({K::kInterleaved1F1B, 2, 4, 1}),
                    Catch::Contains("parallel.virtual_stages must be at least 2 for "
                                    "interleaved_1f1b, got 1"));
  CHECK_THROWS_WITH(validate({K::kInterleaved1F1B, 1, 4, 2}),
                    Catch::Contains("parallel.pp must be at least 2 for interleaved_1f1b, got 1"));
  CHECK_THROWS_WITH(validate({K::kInterleaved1F1B, 4, 6, 2}),
                    Catch::Contains("parallel.micro_batches (6) must be a multiple of "
                                    "parallel.pp (4) for interleaved_1f1b"));
  CHECK_THROWS_WITH(build_schedule({K::kOneFOneB, 2, 4}, 2),
                    Catch::Contains("pipeline rank 2 is outside parallel.pp 2"));
}

TEST_CASE("pipeline: each rank runs every (mb, chunk) it owns once forward, then once backward",
          "[pipeline]") {
  for (const ScheduleSpec& spec : valid_specs()) {
    INFO(describe(spec));
    const auto schedules = build_all_schedules(spec);
    REQUIRE(static_cast<int>(schedules.size()) == spec.stages);
    for (int rank = 0; rank < spec.stages; ++rank) {
      INFO("rank " << rank);
      std::map<std::pair<int, int>, int> forward_at, backward_at;  // (mb, chunk) -> position
      for (size_t i = 0; i < schedules[rank].size(); ++i) {
        const Action& a = schedules[rank][i];
        if (!is_compute(a.type)) continue;
        auto& seen = a.type == ActionType::kForward ? forward_at : backward_at;
        CHECK(seen.count({a.micro_batch, a.chunk}) == 0);
        seen[{a.micro_batch, a.chunk}] = static_cast<int>(i);
      }
      CHECK(static_cast<int>(forward_at.size()) == spec.micro_batches * spec.virtual_stages);
      CHECK(static_cast<int>(backward_at.size()) == spec.micro_batches * spec.virtual_stages);
      for (int mb = 0; mb < spec.micro_batches; ++mb)
        for (int chunk = 0; chunk < spec.virtual_stages; ++chunk) {
          REQUIRE(forward_at.count({mb, chunk}) == 1);
          REQUIRE(backward_at.count({mb, chunk}) == 1);
          CHECK(forward_at[{mb, chunk}] < backward_at[{mb, chunk}]);
        }
    }
  }
}

TEST_CASE("pipeline: each compute action sits between its receive and its send", "[pipeline]") {
  for (const ScheduleSpec& spec : valid_specs()) {
    INFO(describe(spec));
    const int p = spec.stages, last_stage = spec.num_virtual_stages() - 1;
    for (int rank = 0; rank < p; ++rank) {
      const auto actions = build_schedule(spec, rank);
      INFO("rank " << rank);
      size_t expected_size = 0;
      for (size_t i = 0; i < actions.size(); ++i) {
        const Action& a = actions[i];
        if (!is_compute(a.type)) continue;
        const int stage = virtual_stage_of(spec, rank, a.chunk);
        const bool forward = a.type == ActionType::kForward;
        // The neighbour the input comes from and the one the output goes to.
        const int in_stage = forward ? stage - 1 : stage + 1;
        const int out_stage = forward ? stage + 1 : stage - 1;
        const bool has_input = in_stage >= 0 && in_stage <= last_stage;
        const bool has_output = out_stage >= 0 && out_stage <= last_stage;
        expected_size += 1 + has_input + has_output;
        if (has_input) {
          REQUIRE(i >= 1);
          const Action recv{forward ? ActionType::kRecvActivation : ActionType::kRecvGrad,
                            a.micro_batch, a.chunk, rank_of_virtual_stage(spec, in_stage)};
          CHECK(actions[i - 1] == recv);
        }
        if (has_output) {
          REQUIRE(i + 1 < actions.size());
          const Action send{forward ? ActionType::kSendActivation : ActionType::kSendGrad,
                            a.micro_batch, a.chunk, rank_of_virtual_stage(spec, out_stage)};
          CHECK(actions[i + 1] == send);
        }
      }
      CHECK(actions.size() == expected_size);  // no send/recv other than those
      if (p == 1) CHECK(actions.size() == compute_actions(actions).size());
    }
  }
}

TEST_CASE("pipeline: every send has exactly one matching receive on the peer", "[pipeline]") {
  for (const ScheduleSpec& spec : valid_specs()) {
    INFO(describe(spec));
    const auto schedules = build_all_schedules(spec);
    std::multiset<Message> sends, receives;
    for (int rank = 0; rank < spec.stages; ++rank) {
      for (const Action& a : schedules[rank]) {
        const int stage = virtual_stage_of(spec, rank, a.chunk);
        switch (a.type) {
          case ActionType::kSendActivation:
            sends.insert({true, a.micro_batch, stage, stage + 1, rank, a.peer});
            break;
          case ActionType::kRecvActivation:
            receives.insert({true, a.micro_batch, stage - 1, stage, a.peer, rank});
            break;
          case ActionType::kSendGrad:
            sends.insert({false, a.micro_batch, stage, stage - 1, rank, a.peer});
            break;
          case ActionType::kRecvGrad:
            receives.insert({false, a.micro_batch, stage + 1, stage, a.peer, rank});
            break;
          default:
            break;
        }
      }
    }
    // One activation and one grad message per micro-batch and virtual-stage edge.
    const size_t edges = static_cast<size_t>(spec.num_virtual_stages() - 1);
    CHECK(sends.size() == 2 * edges * spec.micro_batches);
    CHECK(sends == receives);
    CHECK(std::set<Message>(sends.begin(), sends.end()).size() == sends.size());
    for (const Message& m : sends) {
      // The peer owns the stage on the other side of the edge.
      CHECK(std::get<4>(m) == rank_of_virtual_stage(spec, std::get<2>(m)));
      CHECK(std::get<5>(m) == rank_of_virtual_stage(spec, std::get<3>(m)));
    }
  }
}

TEST_CASE("pipeline: the simulator runs every valid schedule to the end", "[pipeline]") {
  for (const ScheduleSpec& spec : valid_specs()) {
    INFO(describe(spec));
    const SimulationResult result = simulate(build_all_schedules(spec), spec);
    CHECK_FALSE(result.deadlock);
    CHECK(result.deadlock_report.empty());
    CHECK(static_cast<int>(result.idle_time.size()) == spec.stages);
    CHECK(result.makespan >= spec.micro_batches * spec.virtual_stages * 3.0);
  }
}

TEST_CASE("pipeline: the order of compute actions follows Megatron-LM", "[pipeline]") {
  using K = ScheduleKind;
  const auto F = [](int mb, int chunk = 0) { return Action{ActionType::kForward, mb, chunk}; };
  const auto B = [](int mb, int chunk = 0) { return Action{ActionType::kBackward, mb, chunk}; };

  // 1F1B, p=2, m=3: rank 0 warms up with one forward, rank 1 alternates from the start.
  CHECK(compute_actions(build_schedule({K::kOneFOneB, 2, 3}, 0)) ==
        std::vector<Action>{F(0), F(1), B(0), F(2), B(1), B(2)});
  CHECK(compute_actions(build_schedule({K::kOneFOneB, 2, 3}, 1)) ==
        std::vector<Action>{F(0), B(0), F(1), B(1), F(2), B(2)});
  // GPipe: all forwards, then all backwards in the same micro-batch order.
  CHECK(compute_actions(build_schedule({K::kGPipe, 2, 3}, 1)) ==
        std::vector<Action>{F(0), F(1), F(2), B(0), B(1), B(2)});

  for (const ScheduleSpec& spec : valid_specs()) {
    INFO(describe(spec));
    const int p = spec.stages, m = spec.micro_batches, v = spec.virtual_stages;
    for (int rank = 0; rank < p; ++rank) {
      INFO("rank " << rank);
      const auto actions = build_schedule(spec, rank);
      int warmup = m;
      if (spec.kind == K::kOneFOneB) warmup = std::min(p - rank - 1, m);
      if (spec.kind == K::kInterleaved1F1B)
        warmup = std::min((p - rank - 1) * 2 + (v - 1) * p, m * v);
      // The first 1F1B pair starts with a forward too.
      const int pairs = m * v - warmup;
      CHECK(forwards_before_first_backward(actions) == warmup + (pairs > 0 ? 1 : 0));
      // After warm-up, forward/backward pairs until the forwards run out, then backwards.
      const auto compute = compute_actions(actions);
      for (int i = warmup; i < 2 * m * v; ++i) {
        const bool steady_forward = i < warmup + 2 * pairs && (i - warmup) % 2 == 0;
        CHECK(compute[i].type == (steady_forward ? ActionType::kForward : ActionType::kBackward));
      }
      // The k-th forward / backward of a rank (Narayanan et al. 2021; v == 1 is plain order).
      int forwards = 0, backwards = 0;
      for (const Action& a : compute) {
        int& k = a.type == ActionType::kForward ? forwards : backwards;
        const int chunk_in_order = (k / p) % v;
        CHECK(a.micro_batch == (k / (p * v)) * p + k % p);
        CHECK(a.chunk ==
              (a.type == ActionType::kForward ? chunk_in_order : v - 1 - chunk_in_order));
        ++k;
      }
    }
  }
}

TEST_CASE("pipeline: gpipe and 1f1b leave a bubble of exactly p - 1 micro-batch slots",
          "[pipeline]") {
  for (ScheduleKind kind : {ScheduleKind::kGPipe, ScheduleKind::kOneFOneB})
    for (int p : {1, 2, 3, 4, 8})
      for (int m : {1, 2, 3, 4, 7, 8, 16}) {
        const ScheduleSpec spec{kind, p, m};
        INFO(describe(spec));
        const SimulationResult result = simulate(build_all_schedules(spec), spec, 1.0, 2.0);
        REQUIRE_FALSE(result.deadlock);
        // The first micro-batch needs p - 1 forwards to reach the last rank, the last one p - 1
        // backwards to come back: (m + p - 1) * (f + b) in all, the same idle time on every rank.
        CHECK(result.makespan == (m + p - 1) * 3.0);
        for (double idle : result.idle_time) CHECK(idle == (p - 1) * 3.0);
        CHECK(result.bubble_slots == p - 1);
        CHECK(result.bubble_fraction == (p - 1.0) / m);
      }
}

TEST_CASE("pipeline: interleaving v chunks shrinks the bubble to (p - 1) / v slots", "[pipeline]") {
  const ScheduleKind kind = ScheduleKind::kInterleaved1F1B;
  for (int p : {2, 4})
    for (int m : {4, 8})
      for (int v : {2, 4}) {
        const ScheduleSpec spec{kind, p, m, v};
        INFO(describe(spec));
        const SimulationResult result = simulate(build_all_schedules(spec), spec, 1.0, 2.0);
        REQUIRE_FALSE(result.deadlock);
        CHECK(result.bubble_slots == (p - 1.0) / v);
        CHECK(result.bubble_fraction == (p - 1.0) / (v * m));
        const SimulationResult plain = simulate(
            build_all_schedules({ScheduleKind::kOneFOneB, p, m}), {ScheduleKind::kOneFOneB, p, m});
        CHECK(result.bubble_fraction == plain.bubble_fraction / v);
      }
  // Larger pipelines and other chunk counts, including the all-warm-up case m == p.
  for (int p : {3, 8})
    for (int v : {2, 3})
      for (int m : {p, 2 * p, 3 * p}) {
        const ScheduleSpec spec{kind, p, m, v};
        INFO(describe(spec));
        const SimulationResult result = simulate(build_all_schedules(spec), spec, 1.0, 2.0);
        REQUIRE_FALSE(result.deadlock);
        CHECK(result.bubble_slots == Approx((p - 1.0) / v));
      }
}

TEST_CASE("pipeline: activations in flight: 1f1b holds min(p - r, m), gpipe m", "[pipeline]") {
  for (int p : {1, 2, 4, 8})
    for (int m : {1, 2, 4, 8, 16})
      for (int rank = 0; rank < p; ++rank) {
        INFO("p=" << p << " m=" << m << " rank " << rank);
        CHECK(peak_in_flight(build_schedule({ScheduleKind::kOneFOneB, p, m}, rank)) ==
              std::min(p - rank, m));
        CHECK(peak_in_flight(build_schedule({ScheduleKind::kGPipe, p, m}, rank)) == m);
      }
  // Interleaved: the warm-up forwards plus the one of the first 1F1B pair.
  const ScheduleSpec spec{ScheduleKind::kInterleaved1F1B, 4, 8, 2};
  for (int rank = 0; rank < 4; ++rank)
    CHECK(peak_in_flight(build_schedule(spec, rank)) == (4 - rank - 1) * 2 + 4 + 1);
}

TEST_CASE("pipeline: the simulator times a single rank as the sum of its work", "[pipeline]") {
  const ScheduleSpec spec{ScheduleKind::kOneFOneB, 1, 5};
  const SimulationResult result = simulate(build_all_schedules(spec), spec, 1.5, 2.5);
  REQUIRE_FALSE(result.deadlock);
  CHECK(result.makespan == 5 * 4.0);
  CHECK(result.idle_time == std::vector<double>{0.0});
  CHECK(result.bubble_slots == 0);
  CHECK(result.bubble_fraction == 0);
  CHECK_THROWS_AS(simulate(build_all_schedules(spec), spec, 0.0, 0.0), ConfigError);
}

TEST_CASE("pipeline: a removed SendActivation leaves its receiver stuck: deadlock reported",
          "[pipeline]") {
  const ScheduleSpec spec{ScheduleKind::kOneFOneB, 4, 8};
  auto schedules = build_all_schedules(spec);
  auto& rank1 = schedules[1];
  const Action removed{ActionType::kSendActivation, 2, 0, 2};
  const auto it = std::find(rank1.begin(), rank1.end(), removed);
  REQUIRE(it != rank1.end());
  rank1.erase(it);
  const SimulationResult result = simulate(schedules, spec);
  CHECK(result.deadlock);
  CHECK_FALSE(result.deadlock_report.empty());
  CHECK_THAT(result.deadlock_report,
             Catch::Contains("rank 2 is stuck at") &&
                 Catch::Contains("RecvAct(mb=2,chunk=0<-rank 1): the matching send has not run"));
  CHECK(result.makespan == 0);  // timing is not reported for a run that did not finish
}

TEST_CASE("pipeline: a Backward placed before its Forward is reported as a deadlock",
          "[pipeline]") {
  const ScheduleSpec spec{ScheduleKind::kGPipe, 2, 2};
  auto schedules = build_all_schedules(spec);
  // Rank 1 (last stage, no grad to receive) is moved to run B(mb=1) first.
  auto& rank1 = schedules[1];
  const Action backward{ActionType::kBackward, 1, 0};
  rank1.erase(std::find(rank1.begin(), rank1.end(), backward));
  rank1.insert(rank1.begin(), backward);
  const SimulationResult result = simulate(schedules, spec);
  CHECK(result.deadlock);
  CHECK_THAT(
      result.deadlock_report,
      Catch::Contains("rank 1 is stuck at action 0 B(mb=1,chunk=0): its Forward has not run"));

  // Likewise a Forward placed before the receive of its activation.
  auto swapped = build_all_schedules(spec);
  std::swap(swapped[1][0], swapped[1][1]);  // RecvAct(mb=0), F(mb=0) -> F, RecvAct
  const SimulationResult forward_first = simulate(swapped, spec);
  CHECK(forward_first.deadlock);
  CHECK_THAT(forward_first.deadlock_report,
             Catch::Contains("F(mb=0,chunk=0): its activation was not received"));
}

TEST_CASE("pipeline: the simulator rejects lists that are wrong whatever the timing",
          "[pipeline]") {
  const ScheduleSpec spec{ScheduleKind::kInterleaved1F1B, 2, 4, 2};
  const auto good = build_all_schedules(spec);
  REQUIRE_FALSE(simulate(good, spec).deadlock);

  auto duplicate = good;
  duplicate[0].push_back(duplicate[0].front());
  CHECK_THROWS_WITH(simulate(duplicate, spec), Catch::Contains("is a duplicate"));

  auto missing_backward = good;
  missing_backward[0].pop_back();  // the last action of rank 0 is a Backward on stage 0
  CHECK_THROWS_WITH(simulate(missing_backward, spec),
                    Catch::Contains("rank 0 has no B(mb=3,chunk=0)"));

  auto wrong_peer = good;  // SendGrad from stage 2 (rank 0, chunk 1) to stage 1, on rank 1
  const auto send_grad =
      std::find(wrong_peer[0].begin(), wrong_peer[0].end(), Action{ActionType::kSendGrad, 0, 1, 1});
  REQUIRE(send_grad != wrong_peer[0].end());
  send_grad->peer = 0;
  CHECK_THROWS_WITH(simulate(wrong_peer, spec), Catch::Contains("should name rank 1"));

  auto no_edge = good;
  no_edge[0].push_back({ActionType::kRecvActivation, 0, 0, 1});  // stage 0 has no predecessor
  CHECK_THROWS_AS(simulate(no_edge, spec), InternalError);

  auto out_of_range = good;
  out_of_range[1].push_back({ActionType::kForward, 4, 0});
  CHECK_THROWS_WITH(simulate(out_of_range, spec), Catch::Contains("is outside m=4, v=2"));

  CHECK_THROWS_AS(simulate({good[0]}, spec), InternalError);
}

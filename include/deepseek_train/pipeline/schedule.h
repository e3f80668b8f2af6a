// Pipeline-parallel schedules (torch-free). For each pipeline rank, the ordered list of actions
// (receive, forward, send, backward) that runs one optimizer step's micro-batches through a model
// cut into stages: GPipe, 1F1B (PipeDream-Flush) and interleaved 1F1B (several model chunks per
// rank). A runtime executes a rank's list in order; simulate() executes all lists with abstract
// costs to prove they are consistent and deadlock-free and to measure the pipeline bubble.
//
// Terms: p pipeline ranks, m micro-batches per optimizer step, v virtual stages (model chunks) per
// rank. There are S = p * v virtual stages; virtual stage s lives on rank s % p as its local chunk
// s / p. Forward runs through virtual stages 0..S-1, backward through S-1..0; stage 0 holds the
// embedding, stage S-1 the head and the loss.
#pragma once

#include <string>
#include <vector>

namespace dst {

enum class ScheduleKind { kGPipe, kOneFOneB, kInterleaved1F1B };

// "gpipe" | "1f1b" | "interleaved_1f1b" (alias "interleaved"); throws ConfigError otherwise.
ScheduleKind parse_schedule_kind(const std::string& name);
// "gpipe" | "1f1b" | "interleaved_1f1b" (parse_schedule_kind accepts each of them back).
std::string to_string(ScheduleKind kind);

enum class ActionType {
  kRecvActivation,
  kForward,
  kSendActivation,
  kRecvGrad,
  kBackward,
  kSendGrad
};

// One step of a rank's list. Every action names the (micro_batch, chunk) it belongs to; sends and
// receives name the pipeline rank on the other side of the virtual-stage edge.
struct Action {
  ActionType type;
  int micro_batch;  // 0..m-1
  int chunk;        // local chunk on this rank, 0..v-1 (virtual stage = chunk * p + rank)
  int peer = -1;    // send/recv: pp rank of the other side; -1 for Forward/Backward

  bool operator==(const Action& other) const;
  bool operator!=(const Action& other) const { return !(*this == other); }
};

// "F(mb=3,chunk=1)", "B(mb=3,chunk=1)", "SendAct(mb=3,chunk=1->rank 0)",
// "RecvAct(mb=3,chunk=1<-rank 2)", "SendGrad(...->rank r)", "RecvGrad(...<-rank r)".
std::string to_string(const Action& action);

struct ScheduleSpec {
  ScheduleKind kind;
  int stages;              // p: pipeline ranks (parallel.pp)
  int micro_batches;       // m: micro-batches per optimizer step (parallel.micro_batches)
  int virtual_stages = 1;  // v: model chunks per rank (parallel.virtual_stages)

  int num_virtual_stages() const { return stages * virtual_stages; }
};

// Virtual stage of `chunk` on `rank` (chunk * p + rank), and the rank that owns virtual stage s.
int virtual_stage_of(const ScheduleSpec& spec, int rank, int chunk);
int rank_of_virtual_stage(const ScheduleSpec& spec, int stage);

// Throws ConfigError (one line naming the parallel.* key) unless:
//   p >= 1, m >= 1, v >= 1;
//   gpipe and 1f1b: v == 1;
//   interleaved_1f1b: v >= 2 and p >= 2 (with one rank there is no bubble to shrink, and the
//     chunks would only pass tensors to themselves; use 1f1b), and m % p == 0. Micro-batches go
//     through the chunks in groups of p (Megatron-LM's requirement too): then the bubble is
//     exactly (p - 1) / v micro-batch slots. Letting the last group be shorter is not enough --
//     with the same warm-up count the lists deadlock (e.g. p=4 v=3 m=5, p=8 v=2 m=10), and where
//     they don't the bubble can exceed plain 1f1b's p - 1 (p=4 v=2 m=9: 3.33 slots instead of
//     1.5) -- so other m are rejected.
void validate(const ScheduleSpec& spec);

// The ordered action list of pp rank `rank` (0..p-1); validates the spec first. Each compute
// action is wrapped in its communication: RecvActivation right before a Forward that is not on
// virtual stage 0, SendActivation right after a Forward that is not on stage S-1, RecvGrad right
// before a Backward that is not on stage S-1, SendGrad right after a Backward not on stage 0.
// With p == 1 (and so v == 1) there is a single stage and no send/recv at all.
//
// Order of the compute actions:
//   gpipe:  all m forwards (mb 0..m-1), then all m backwards in the same order (mb 0..m-1).
//           Every rank holds m activations at the peak.
//   1f1b:   PipeDream-Flush, as Megatron-LM forward_backward_pipelining_without_interleaving:
//           min(p - rank - 1, m) warm-up forwards, then pairs of one forward + one backward,
//           then the remaining backwards. Rank r holds at most min(p - r, m) activations.
//   interleaved_1f1b: Megatron-LM forward_backward_pipelining_with_interleaving (Narayanan et
//           al. 2021). The k-th forward runs chunk (k / p) % v of micro-batch
//           (k / (p * v)) * p + k % p, i.e. groups of p micro-batches go through chunk 0, then
//           chunk 1, ...; backwards take the same order with the chunks reversed. Warm-up is
//           min((p - rank - 1) * 2 + (v - 1) * p, m * v) forwards, then 1F1B pairs, then the
//           remaining backwards. With forward cost f and backward cost b per chunk the bubble is
//           (p - 1) * (f + b), i.e. (p - 1) / v of one micro-batch's work on a rank.
std::vector<Action> build_schedule(const ScheduleSpec& spec, int rank);
// build_schedule for every rank; index = pp rank.
std::vector<std::vector<Action>> build_all_schedules(const ScheduleSpec& spec);

struct SimulationResult {
  bool deadlock = false;          // true if some rank could not run its whole list
  std::string deadlock_report;    // one line per stuck rank: the action it waits at, and for what
  double makespan = 0;            // time until the last rank finishes
  std::vector<double> idle_time;  // per rank: makespan - busy time
  // max over ranks of idle_time / (v * (forward_cost + backward_cost)): idle time measured in
  // "one micro-batch's full forward + backward on a rank".
  double bubble_slots = 0;
  // max idle_time / (m * v * (forward_cost + backward_cost)): idle share of a rank's step time
  // relative to its useful work.
  double bubble_fraction = 0;
};

// Executes the lists as a runtime would and times them. A Forward costs forward_cost, a Backward
// backward_cost (per chunk); sends and receives cost 0. Each rank runs its list strictly in order,
// and an action runs only once what it needs has happened, otherwise the rank waits there:
//   RecvActivation / RecvGrad: the matching send (same micro-batch, same virtual-stage edge, same
//     direction) has executed on the peer. Sends never wait for their receiver (buffered).
//   Forward: on a virtual stage other than 0, its activation has been received on this rank.
//   Backward: its Forward has run on this rank, and on a stage other than S-1 its grad has been
//     received.
//   SendActivation / SendGrad: the Forward / Backward producing the tensor has run.
// When no rank can move and some have not finished, deadlock is true and deadlock_report names
// each stuck rank, the action and what it waits for; the timing fields are then left at zero.
// This is how ordering mistakes show up: a receive with no matching send anywhere, a Backward
// placed before its Forward, a Forward placed before its RecvActivation, a removed receive (the
// consumer waits) all end in deadlock = true rather than an exception.
//
// Throws ConfigError for an invalid spec or costs (both >= 0, sum > 0), and InternalError for
// lists that are wrong whatever the timing: not one list per rank, a micro-batch, chunk or peer
// out of range or not matching the virtual-stage edge, a send/recv on an edge that does not exist
// (RecvActivation on stage 0, ...), a duplicate action, or an owned (mb, chunk) without its
// Forward or Backward.
SimulationResult simulate(const std::vector<std::vector<Action>>& schedules,
                          const ScheduleSpec& spec, double forward_cost = 1.0,
                          double backward_cost = 2.0);

}  // namespace dst

// The hang watchdog's side channel. Every collective has a deadline (comm.timeout_s); when one
// passes, the waiting rank must say which ranks never arrived. It cannot ask them through the
// stuck backend, so each process records the collectives it enters on a ProgressBoard and serves
// that board over a small TCP listener on its own thread (SideChannel). The timed-out rank asks
// every member of the group for its board (name_missing_ranks) and names those whose last
// collective on the group comes before the one it is stuck in. The listener binds to loopback
// when the whole job runs on one node (its host's address otherwise) and answers only requests
// that start with the job's random token (distributed over the world communicator at start-up):
// anyone else gets nothing, and the first such attempt is logged. Torch-free and MPI-free.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dst::comm {

// The last collective this process entered on each process group, readable from any thread.
class ProgressBoard {
 public:
  struct Entry {
    uint64_t sequence = 0;  // 1 for the group's first collective
    std::string op;         // e.g. "all_reduce(sum)"
  };
  // `group_key` identifies one group identically on all of its members (see group_key()).
  void entered(const std::string& group_key, uint64_t sequence, const std::string& op);
  std::map<std::string, Entry> snapshot() const;
  // Set when a collective of this process failed: pending operations are then abandoned instead
  // of waited for (the job is being aborted).
  void mark_failed() { failed_ = true; }
  bool failed() const { return failed_; }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;
  std::atomic<bool> failed_{false};
};

// A key every member of a group computes alike: its label, its members' world ranks and how many
// groups with the same label and members this process created before (duplicates of one group).
std::string group_key(const std::string& label, const std::vector<int>& world_ranks,
                      int duplicate_index);

// Where a side channel listens and whom it answers.
struct SideChannelOptions {
  // Host address to listen on ("127.0.0.1" for a job on one node); empty: every interface.
  std::string bind_host;
  // Every request must be this line (random_job_token()); empty: any request is answered.
  std::string token;
};

// 32 random bytes as 64 hex digits (OpenSSL's RAND_bytes).
std::string random_job_token();

// The address a job's side channels listen on, from every rank's host name: loopback when all are
// the same host, else this host's first non-loopback IPv4 address (empty when it has none: every
// interface, still token-protected).
std::string side_channel_bind_host(const std::vector<std::string>& host_names_of_job);
std::string local_host_name();

// Serves a ProgressBoard (plus this process's host name and pid), as one JSON object on a
// background thread, to each connection whose first line is the token; others are closed
// unanswered. Listens on a port the system picks.
class SideChannel {
 public:
  explicit SideChannel(std::shared_ptr<const ProgressBoard> board, SideChannelOptions options = {});
  ~SideChannel();
  SideChannel(const SideChannel&) = delete;
  SideChannel& operator=(const SideChannel&) = delete;

  // "host:port" that other processes of the job can connect to; empty when listening failed
  // (the watchdog then reports that it cannot tell who is missing).
  const std::string& address() const { return address_; }
  // Connections closed without an answer (no token, or a wrong one).
  uint64_t refused() const { return refused_; }

 private:
  void serve();
  // Reads the request line within a second; whether it is the token.
  bool authorised(int client);

  std::shared_ptr<const ProgressBoard> board_;
  SideChannelOptions options_;
  std::atomic<uint64_t> refused_{0};
  int listen_fd_ = -1;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// What a peer's side channel answered.
struct PeerProgress {
  bool reachable = false;
  std::string error;  // when unreachable
  std::string host;
  int64_t pid = 0;
  std::map<std::string, ProgressBoard::Entry> entries;
};

// Asks the side channel at `address` for its board with the job's token, giving up after
// `timeout`.
PeerProgress query_side_channel(const std::string& address, const std::string& token,
                                std::chrono::milliseconds timeout);

// A group member as the watchdog reports it.
struct GroupMember {
  int group_rank = 0;
  int world_rank = 0;
  std::string address;  // its side channel
};

// For a collective stuck at `sequence` on the group `group_key`: one line naming every member
// that has not entered it (with its last collective on the group, host and pid) and every member
// whose side channel did not answer. Queries the members concurrently, each within `timeout`.
std::string name_missing_ranks(const std::string& group_key, uint64_t sequence,
                               const std::vector<GroupMember>& members, const std::string& token,
                               std::chrono::milliseconds timeout);

}  // namespace dst::comm

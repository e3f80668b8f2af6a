#include "deepseek_train/comm/watchdog.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace dst::comm {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

void ProgressBoard::entered(const std::string& group_key, uint64_t sequence,
                            const std::string& op) {
  std::lock_guard<std::mutex> lock(mutex_);
  Entry& entry = entries_[group_key];
  entry.sequence = sequence;
  entry.op = op;
}

std::map<std::string, ProgressBoard::Entry> ProgressBoard::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_;
}

std::string group_key(const std::string& label, const std::vector<int>& world_ranks,
                      int duplicate_index) {
  // FNV-1a over the member list keeps keys short for large groups.
  uint64_t hash = 1469598103934665603ull;
  for (int rank : world_ranks) {
    hash ^= static_cast<uint64_t>(static_cast<uint32_t>(rank));
    hash *= 1099511628211ull;
  }
  std::ostringstream key;
  key << label << "/" << world_ranks.size() << "/" << std::hex << hash << "/" << std::dec
      << duplicate_index;
  return key.str();
}

std::string local_host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

std::string random_job_token() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1)
    throw std::runtime_error("side channel: OpenSSL could not draw the job token");
  static const char* const kHex = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) token += {kHex[b >> 4], kHex[b & 15]};
  return token;
}

std::string side_channel_bind_host(const std::vector<std::string>& host_names_of_job) {
  bool one_node = true;
  for (const std::string& host : host_names_of_job)
    one_node = one_node && host == host_names_of_job.front();
  if (one_node) return "127.0.0.1";
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(local_host_name().c_str(), nullptr, &hints, &found) != 0) return "";
  std::string address;
  for (addrinfo* a = found; a != nullptr && address.empty(); a = a->ai_next) {
    char text[INET_ADDRSTRLEN] = {};
    const auto* ip = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
    if (inet_ntop(AF_INET, &ip->sin_addr, text, sizeof(text)) == nullptr) continue;
    if (std::string(text).rfind("127.", 0) != 0) address = text;
  }
  freeaddrinfo(found);
  return address;
}

namespace {

std::string errno_text() { return std::strerror(errno); }

// Remaining milliseconds until `deadline` (at least 0), as poll() wants them.
int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

std::string board_json(const ProgressBoard& board) {
  json entries = json::object();
  for (const auto& [key, entry] : board.snapshot())
    entries[key] = {{"sequence", entry.sequence}, {"op", entry.op}};
  return json{
      {"host", local_host_name()}, {"pid", static_cast<int64_t>(getpid())}, {"entries", entries}}
      .dump();
}

// Connects to host:port within the deadline. Returns the socket or -1 with `error` set.
int connect_with_deadline(const std::string& host, const std::string& port,
                          Clock::time_point deadline, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    *error = "cannot resolve host '" + host + "': " + gai_strerror(rc);
    return -1;
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(found, freeaddrinfo);
  *error = "no address for '" + host + "'";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) return fd;
    if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (poll(&p, 1, remaining_ms(deadline)) == 1) {
        int so_error = 0;
        socklen_t length = sizeof(so_error);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length);
        if (so_error == 0) return fd;
        *error = std::string("connect: ") + std::strerror(so_error);
      } else {
        *error = "connect timed out";
      }
    } else {
      *error = "connect: " + errno_text();
    }
    close(fd);
  }
  return -1;
}

}  // namespace

SideChannel::SideChannel(std::shared_ptr<const ProgressBoard> board, SideChannelOptions options)
    : board_(std::move(board)), options_(std::move(options)) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return;
  const int yes = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  if (!options_.bind_host.empty() &&
      inet_pton(AF_INET, options_.bind_host.c_str(), &address.sin_addr) != 1) {
    close(listen_fd_);
    listen_fd_ = -1;
    return;
  }
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(listen_fd_, 64) != 0 ||
      getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(listen_fd_);
    listen_fd_ = -1;
    return;
  }
  address_ = (options_.bind_host.empty() ? local_host_name() : options_.bind_host) + ":" +
             std::to_string(ntohs(address.sin_port));
  thread_ = std::thread([this] { serve(); });
}

SideChannel::~SideChannel() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
}

void SideChannel::serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 100) != 1) continue;
    sockaddr_in peer{};
    socklen_t peer_length = sizeof(peer);
    const int client =
        accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_length, SOCK_CLOEXEC);
    if (client < 0) continue;
    if (!authorised(client)) {
      if (refused_++ == 0) {
        char text[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &peer.sin_addr, text, sizeof(text));
        std::fprintf(stderr,
                     "[side channel] refused a connection from %s without this job's token "
                     "(further refusals are not logged)\n",
                     text);
      }
      close(client);
      continue;
    }
    timeval send_timeout{1, 0};
    setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
    const std::string reply = board_json(*board_);
    size_t sent = 0;
    while (sent < reply.size()) {
      const ssize_t n = send(client, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    close(client);
  }
}

bool SideChannel::authorised(int client) {
  // The request: one line within a second, at most 128 bytes.
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(1);
  std::string line;
  char c = 0;
  while (line.size() <= 128) {
    pollfd p{client, POLLIN, 0};
    if (poll(&p, 1, remaining_ms(deadline)) != 1) return false;
    const ssize_t n = recv(client, &c, 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return false;
    if (c == '\n') break;
    line += c;
  }
  if (c != '\n') return false;
  if (options_.token.empty()) return true;
  return line.size() == options_.token.size() &&
         CRYPTO_memcmp(line.data(), options_.token.data(), line.size()) == 0;
}

PeerProgress query_side_channel(const std::string& address, const std::string& token,
                                std::chrono::milliseconds timeout) {
  PeerProgress peer;
  const size_t colon = address.rfind(':');
  if (address.empty() || colon == std::string::npos) {
    peer.error = "it has no side channel";
    return peer;
  }
  const Clock::time_point deadline = Clock::now() + timeout;
  const int fd = connect_with_deadline(address.substr(0, colon), address.substr(colon + 1),
                                       deadline, &peer.error);
  if (fd < 0) return peer;
  const std::string request = token + "\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    peer.error = "send: " + errno_text();
    close(fd);
    return peer;
  }
  std::string text;
  char buffer[4096];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, remaining_ms(deadline)) != 1) {
      peer.error = "no answer within " + std::to_string(timeout.count()) + " ms";
      close(fd);
      return peer;
    }
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  if (text.empty()) {
    peer.error = "closed without an answer (not this job's token?)";
    return peer;
  }
  try {
    const json reply = json::parse(text);
    peer.host = reply.at("host").get<std::string>();
    peer.pid = reply.at("pid").get<int64_t>();
    for (const auto& [key, entry] : reply.at("entries").items())
      peer.entries[key] = {entry.at("sequence").get<uint64_t>(), entry.at("op").get<std::string>()};
    peer.reachable = true;
  } catch (const json::exception& e) {
    peer.error = std::string("malformed answer: ") + e.what();
  }
  return peer;
}

std::string name_missing_ranks(const std::string& group_key, uint64_t sequence,
                               const std::vector<GroupMember>& members, const std::string& token,
                               std::chrono::milliseconds timeout) {
  std::vector<PeerProgress> answers(members.size());
  constexpr size_t kConcurrent = 64;
  for (size_t begin = 0; begin < members.size(); begin += kConcurrent) {
    std::vector<std::thread> threads;
    for (size_t i = begin; i < std::min(members.size(), begin + kConcurrent); ++i)
      threads.emplace_back(
          [&, i] { answers[i] = query_side_channel(members[i].address, token, timeout); });
    for (std::thread& t : threads) t.join();
  }
  std::ostringstream missing, unreachable;
  int missing_count = 0, unreachable_count = 0;
  for (size_t i = 0; i < members.size(); ++i) {
    const GroupMember& member = members[i];
    const PeerProgress& peer = answers[i];
    if (!peer.reachable) {
      unreachable << (unreachable_count++ ? "; " : "") << "rank " << member.group_rank
                  << " (world rank " << member.world_rank << "): " << peer.error;
      continue;
    }
    const auto entry = peer.entries.find(group_key);
    const uint64_t reached = entry == peer.entries.end() ? 0 : entry->second.sequence;
    if (reached >= sequence) continue;
    missing << (missing_count++ ? "; " : "") << "rank " << member.group_rank << " (world rank "
            << member.world_rank << ", host " << peer.host << ", pid " << peer.pid << ", last "
            << (entry == peer.entries.end()
                    ? std::string("entered no collective on this group")
                    : "entered #" + std::to_string(reached) + " " + entry->second.op)
            << ")";
  }
  std::ostringstream report;
  if (missing_count > 0) report << "not arrived: " << missing.str();
  if (unreachable_count > 0)
    report << (missing_count ? "; " : "")
           << "side channel did not answer (dead or hung?): " << unreachable.str();
  if (missing_count == 0 && unreachable_count == 0)
    report << "every rank of the group has entered it (slow network or a backend fault)";
  return report.str();
}

}  // namespace dst::comm

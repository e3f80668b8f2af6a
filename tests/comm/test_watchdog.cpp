// The hang watchdog's side channel, in one process: boards served over TCP to holders of the job's
// token only (on loopback for a one-host job), a member that has not entered the collective named,
// an unreachable member reported as such.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "deepseek_train/comm/watchdog.h"

using namespace dst::comm;

TEST_CASE("side channel serves the progress board", "[comm]") {
  auto board = std::make_shared<ProgressBoard>();
  board->entered("dp/2/abc/0", 7, "all_reduce(sum)");
  SideChannel channel(board);
  REQUIRE_FALSE(channel.address().empty());
  const PeerProgress peer = query_side_channel(channel.address(), "", std::chrono::seconds(3));
  REQUIRE(peer.reachable);
  CHECK(peer.pid > 0);
  REQUIRE(peer.entries.count("dp/2/abc/0") == 1);
  CHECK(peer.entries.at("dp/2/abc/0").sequence == 7);
  CHECK(peer.entries.at("dp/2/abc/0").op == "all_reduce(sum)");
}

TEST_CASE("watchdog names the members that have not arrived", "[comm]") {
  const std::string key = group_key("dp", {0, 1, 2}, 0);
  auto waiting = std::make_shared<ProgressBoard>(), behind = std::make_shared<ProgressBoard>(),
       ahead = std::make_shared<ProgressBoard>();
  waiting->entered(key, 5, "all_gather");
  behind->entered(key, 4, "reduce_scatter(sum)");
  ahead->entered(key, 6, "all_gather");
  const SideChannelOptions options{"127.0.0.1", random_job_token()};
  SideChannel c0(waiting, options), c1(behind, options), c2(ahead, options);
  const std::vector<GroupMember> members = {
      {0, 0, c0.address()}, {1, 1, c1.address()}, {2, 2, c2.address()}};
  const std::string report =
      name_missing_ranks(key, 5, members, options.token, std::chrono::seconds(3));
  CHECK_THAT(report, Catch::Contains("not arrived: rank 1 (world rank 1, host "));
  CHECK_THAT(report, Catch::Contains("last entered #4 reduce_scatter(sum))"));
  CHECK_THAT(report, !Catch::Contains("rank 0 (") && !Catch::Contains("rank 2 ("));

  // A member with no side channel or one that does not answer is reported, not waited for.
  const std::vector<GroupMember> with_dead = {{0, 0, c0.address()}, {1, 4, "127.0.0.1:1"}};
  const std::string dead =
      name_missing_ranks(key, 5, with_dead, options.token, std::chrono::seconds(2));
  CHECK_THAT(dead, Catch::Contains("side channel did not answer (dead or hung?): rank 1 (world "
                                   "rank 4): connect"));
  // Everyone arrived: the report says so.
  CHECK_THAT(name_missing_ranks(key, 4, members, options.token, std::chrono::seconds(3)),
             Catch::Contains("every rank of the group has entered it"));
}

TEST_CASE("group keys tell groups and their duplicates apart", "[comm]") {
  CHECK(group_key("dp", {0, 2}, 0) == group_key("dp", {0, 2}, 0));
  CHECK(group_key("dp", {0, 2}, 0) != group_key("dp", {1, 3}, 0));
  CHECK(group_key("dp", {0, 2}, 0) != group_key("dp", {0, 2}, 1));
  CHECK(group_key("dp", {0, 2}, 0) != group_key("tp", {0, 2}, 0));
}

namespace {

// Connects to a "host:port" side channel, sends `request` (if any), returns all it answers.
std::string raw_exchange(const std::string& address, const std::string& request) {
  const size_t colon = address.rfind(':');
  sockaddr_in target{};
  target.sin_family = AF_INET;
  target.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  REQUIRE(inet_pton(AF_INET, address.substr(0, colon).c_str(), &target.sin_addr) == 1);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&target), sizeof(target)) == 0);
  if (!request.empty()) REQUIRE(send(fd, request.data(), request.size(), 0) > 0);
  std::string answer;
  char buffer[4096];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) break;
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    answer.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return answer;
}

}  // namespace

TEST_CASE("side channel answers only the job's token, on loopback for a one-host job", "[comm]") {
  const std::string token = random_job_token();
  CHECK(token.size() == 64);
  CHECK(token != random_job_token());
  CHECK(side_channel_bind_host({"node1", "node1"}) == "127.0.0.1");
  auto board = std::make_shared<ProgressBoard>();
  board->entered("dp/2/abc/0", 3, "all_gather");
  SideChannel channel(board, {"127.0.0.1", token});
  CHECK(channel.address().rfind("127.0.0.1:", 0) == 0);
  // A foreign connection gets nothing: silent, a guess, or a request line without the token.
  CHECK(raw_exchange(channel.address(), "").empty());
  CHECK(raw_exchange(channel.address(), "GET / HTTP/1.0\r\n\r\n").empty());
  CHECK(raw_exchange(channel.address(), std::string(64, '0') + "\n").empty());
  CHECK(channel.refused() == 3);
  const PeerProgress wrong = query_side_channel(channel.address(), "nope", std::chrono::seconds(3));
  CHECK_FALSE(wrong.reachable);
  CHECK_THAT(wrong.error, Catch::Contains("closed without an answer (not this job's token?)"));
  // The job's token works as before.
  CHECK_THAT(raw_exchange(channel.address(), token + "\n"), Catch::Contains("all_gather"));
  const PeerProgress peer = query_side_channel(channel.address(), token, std::chrono::seconds(3));
  REQUIRE(peer.reachable);
  CHECK(peer.entries.at("dp/2/abc/0").sequence == 3);
  CHECK(channel.refused() == 4);
}

// The hang watchdog's side channel, in one process: boards served over TCP, a member that has not
// entered the collective named, an unreachable member reported as such.
#include <catch2/catch.hpp>

#include "deepseek_train/comm/watchdog.h"

using namespace dst::comm;

TEST_CASE("side channel serves the progress board", "[comm]") {
  auto board = std::make_shared<ProgressBoard>();
  board->entered("dp/2/abc/0", 7, "all_reduce(sum)");
  SideChannel channel(board);
  REQUIRE_FALSE(channel.address().empty());
  const PeerProgress peer = query_side_channel(channel.address(), std::chrono::seconds(3));
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
  SideChannel c0(waiting), c1(behind), c2(ahead);
  const std::vector<GroupMember> members = {
      {0, 0, c0.address()}, {1, 1, c1.address()}, {2, 2, c2.address()}};
  const std::string report = name_missing_ranks(key, 5, members, std::chrono::seconds(3));
  CHECK_THAT(report, Catch::Contains("not arrived: rank 1 (world rank 1, host "));
  CHECK_THAT(report, Catch::Contains("last entered #4 reduce_scatter(sum))"));
  CHECK_THAT(report, !Catch::Contains("rank 0 (") && !Catch::Contains("rank 2 ("));

  // A member with no side channel or one that does not answer is reported, not waited for.
  const std::vector<GroupMember> with_dead = {{0, 0, c0.address()}, {1, 4, "127.0.0.1:1"}};
  const std::string dead = name_missing_ranks(key, 5, with_dead, std::chrono::seconds(2));
  CHECK_THAT(dead, Catch::Contains("side channel did not answer (dead or hung?): rank 1 (world "
                                   "rank 4): connect"));
  // Everyone arrived: the report says so.
  CHECK_THAT(name_missing_ranks(key, 4, members, std::chrono::seconds(3)),
             Catch::Contains("every rank of the group has entered it"));
}

TEST_CASE("group keys tell groups and their duplicates apart", "[comm]") {
  CHECK(group_key("dp", {0, 2}, 0) == group_key("dp", {0, 2}, 0));
  CHECK(group_key("dp", {0, 2}, 0) != group_key("dp", {1, 3}, 0));
  CHECK(group_key("dp", {0, 2}, 0) != group_key("dp", {0, 2}, 1));
  CHECK(group_key("dp", {0, 2}, 0) != group_key("tp", {0, 2}, 0));
}

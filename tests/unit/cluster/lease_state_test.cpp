// The node lease's state machine (cluster/lease_state.hpp), with CLUSTER.md's numbers.
#include "cluster/lease_state.hpp"

#include <gtest/gtest.h>

namespace gw::cluster {
namespace {

using namespace std::chrono_literals;
using Clock = LeaseClock::Clock;

TEST(LeaseClock, GrantKeepaliveAndLoss) {
  LeaseClock l(8s);
  const auto t0 = Clock::time_point{} + 100s;
  EXPECT_TRUE(l.needs_grant());
  EXPECT_FALSE(l.claims_allowed());
  l.granted(7, t0);
  EXPECT_EQ(l.state(), LeaseState::live);
  EXPECT_EQ(l.id(), 7);
  l.keepalive_failed(t0 + 3s);
  EXPECT_EQ(l.state(), LeaseState::suspect);
  EXPECT_TRUE(l.claims_allowed());  // a claim finds out on its own whether etcd answers
  l.keepalive_failed(t0 + 7s);
  EXPECT_EQ(l.state(), LeaseState::suspect);
  l.tick(t0 + 8s);
  EXPECT_EQ(l.state(), LeaseState::lost);
  EXPECT_FALSE(l.claims_allowed());
  EXPECT_FALSE(l.needs_grant());  // etcd may still know it: keep asking
  l.keepalive_ok(t0 + 20s);       // etcd came back and refreshed it
  EXPECT_EQ(l.state(), LeaseState::live);
}

TEST(LeaseClock, AnswerWithoutTtlMeansRegrant) {
  LeaseClock l(8s);
  const auto t0 = Clock::time_point{} + 100s;
  l.granted(7, t0);
  l.keepalive_unknown();
  EXPECT_EQ(l.state(), LeaseState::expired);
  EXPECT_TRUE(l.needs_grant());
  EXPECT_FALSE(l.claims_allowed());
  l.keepalive_ok(t0 + 1s);  // a late answer for the old lease changes nothing
  EXPECT_EQ(l.state(), LeaseState::expired);
  l.granted(8, t0 + 2s);
  EXPECT_EQ(l.state(), LeaseState::live);
  EXPECT_EQ(l.id(), 8);
}

TEST(LeaseClock, NoneStaysNone) {
  LeaseClock l(8s);
  l.keepalive_unknown();
  l.keepalive_failed(Clock::time_point{} + 50s);
  EXPECT_EQ(l.state(), LeaseState::none);
}

}  // namespace
}  // namespace gw::cluster

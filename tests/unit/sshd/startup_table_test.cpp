// StartupTable: the caps, room for a newcomer when full (the heaviest address's oldest slot is
// evicted), and the penalty box, with the clock passed in.
#include "sshd/startup_table.hpp"

#include <gtest/gtest.h>

namespace gw::sshd {
namespace {

using namespace std::chrono_literals;
using Addr = boost::asio::ip::address;

struct FakeSession final : SessionHandle {
  SessionInfo info() const override { return {}; }
  void close_from_outside(std::string) override {}
  void drain() override {}
  void keys_changed(std::shared_ptr<const keys::KeyStore>) override {}
  void evict() override { ++evicted; }
  int evicted = 0;
};

Addr ip(const char* text) { return boost::asio::ip::make_address(text); }

TEST(StartupTable, CapsPerIpAndInAll) {
  auto t = std::make_shared<StartupTable>(4, 2);
  const auto now = StartupTable::Clock::now();
  auto a1 = t->acquire(ip("10.0.0.1"), now);
  auto a2 = t->acquire(ip("10.0.0.1"), now);
  auto a3 = t->acquire(ip("10.0.0.1"), now);
  EXPECT_TRUE(a1.slot && a2.slot);
  EXPECT_EQ(a3.refusal, StartupTable::Refusal::too_many_from_ip);
  auto b1 = t->acquire(ip("10.0.0.2"), now);
  auto b2 = t->acquire(ip("10.0.0.2"), now);
  EXPECT_EQ(t->size(), 4);
  // Full, and every address holds 2: nobody may be pushed out for a third holder of 2.
  auto c = t->acquire(ip("10.0.0.1"), now);
  EXPECT_EQ(c.refusal, StartupTable::Refusal::too_many_from_ip);
  a1.slot.release(StartupTable::Outcome::authenticated);
  EXPECT_EQ(t->size(), 3);
  EXPECT_TRUE(t->acquire(ip("10.0.0.3"), now).slot) << "a slot given back is free again";
}

TEST(StartupTable, WhenFullANewAddressEvictsTheHeaviestAddressesOldest) {
  auto t = std::make_shared<StartupTable>(3, 3);
  const auto now = StartupTable::Clock::now();
  std::vector<std::shared_ptr<FakeSession>> sessions;
  std::vector<StartupTable::Slot> flood;
  for (int i = 0; i < 3; ++i) {
    auto a = t->acquire(ip("10.0.0.1"), now + std::chrono::seconds(i));
    sessions.push_back(std::make_shared<FakeSession>());
    a.slot.bind(sessions.back());
    flood.push_back(std::move(a.slot));
  }
  auto legit = t->acquire(ip("192.0.2.7"), now + 5s);
  ASSERT_TRUE(legit.slot);
  ASSERT_EQ(legit.evicted, sessions[0]) << "the oldest of the heaviest address";
  EXPECT_EQ(t->size(), 3);
  // Its slot is already gone: releasing it later changes nothing.
  flood[0].release(StartupTable::Outcome::closed);
  EXPECT_EQ(t->size(), 3);
  // The flooder can't push the newcomer out: it holds more, not fewer.
  auto again = t->acquire(ip("10.0.0.1"), now + 6s);
  EXPECT_EQ(again.refusal, StartupTable::Refusal::too_many);
  EXPECT_FALSE(again.evicted);
}

TEST(StartupTable, AddressesThatKeepTimingOutAreRefusedForAWhile) {
  auto t = std::make_shared<StartupTable>(100, 100);
  const auto now = StartupTable::Clock::now();
  const auto strike = [&](std::chrono::seconds at) {
    auto a = t->acquire(ip("10.0.0.9"), now + at);
    ASSERT_TRUE(a.slot);
    a.slot.release(StartupTable::Outcome::timed_out);
  };
  strike(0s);
  strike(0s);
  EXPECT_TRUE(t->acquire(ip("10.0.0.9"), now).slot) << "two timeouts cost nothing yet";
  strike(0s);  // 15 s of penalty: past two strikes' worth
  const auto refused = t->acquire(ip("10.0.0.9"), now + 1s);
  EXPECT_EQ(refused.refusal, StartupTable::Refusal::penalized);
  EXPECT_TRUE(t->acquire(ip("10.0.0.8"), now + 1s).slot) << "other addresses are not affected";
  EXPECT_TRUE(t->acquire(ip("10.0.0.9"), now + 4s).slot) << "back under the threshold";
}

}  // namespace
}  // namespace gw::sshd

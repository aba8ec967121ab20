// PerSecondBudget: at most N lines a second, the rest counted and reported by the next line
// allowed.
#include "common/per_second_budget.hpp"

#include <gtest/gtest.h>

namespace gw {
namespace {

using namespace std::chrono_literals;

// Proves: N lines pass in one second, the rest are refused, and the first line of the next
// second carries how many were left out (then the count starts again from zero).
TEST(PerSecondBudget, AllowsNPerSecondAndCountsTheRest) {
  PerSecondBudget budget(3);
  const auto t0 = PerSecondBudget::Clock::time_point{} + 10s;
  std::uint64_t left_out = 99;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(budget.allow(left_out, t0 + 100ms * i));
    EXPECT_EQ(left_out, 0u);
  }
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(budget.allow(left_out, t0 + 500ms));
  }
  EXPECT_TRUE(budget.allow(left_out, t0 + 1001ms));
  EXPECT_EQ(left_out, 5u);
  EXPECT_TRUE(budget.allow(left_out, t0 + 1002ms));
  EXPECT_EQ(left_out, 0u);
}

// Proves: a quiet period never accumulates credit beyond one second's budget.
TEST(PerSecondBudget, NoBurstAfterQuiet) {
  PerSecondBudget budget(2);
  const auto t0 = PerSecondBudget::Clock::time_point{} + 100s;
  std::uint64_t left_out = 0;
  int allowed = 0;
  for (int i = 0; i < 10; ++i) {
    allowed += budget.allow(left_out, t0 + 10s);
  }
  EXPECT_EQ(allowed, 2);
}

}  // namespace
}  // namespace gw

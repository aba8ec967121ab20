// Tests for the lock-free latency histogram: bucket boundaries are inclusive upper bounds,
// snapshots are cumulative and end in count, odd inputs (negative, NaN, huge) stay defined, and
// concurrent observers lose nothing.
#include "common/histogram.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

namespace gw {
namespace {

using namespace std::chrono_literals;

// A value equal to a bound lands in that bucket (Prometheus `le` is <=).
TEST(Histogram, BoundsAreInclusive) {
  Histogram<3> h({0.1, 1, 10});
  h.observe(0.1);
  h.observe(0.5);
  h.observe(10.0);
  h.observe(11.0);
  const auto s = h.snapshot();
  ASSERT_EQ(s.bounds, (std::vector<double>{0.1, 1, 10}));
  EXPECT_EQ(s.counts, (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(s.count, 4u);
  EXPECT_NEAR(s.sum, 21.6, 1e-6);
}

// Durations convert to seconds.
TEST(Histogram, ObservesDurations) {
  LatencyHistogram h(kLatencyBuckets);
  h.observe(3ms);
  h.observe(std::chrono::microseconds(500));
  const auto s = h.snapshot();
  EXPECT_EQ(s.counts[0], 1u);  // le=0.001
  EXPECT_EQ(s.counts[2], 2u);  // le=0.005
  EXPECT_EQ(s.count, 2u);
  EXPECT_NEAR(s.sum, 0.0035, 1e-9);
}

// Negative and NaN count as zero; huge values go to +Inf without overflowing the sum.
TEST(Histogram, OddInputsStayDefined) {
  Histogram<1> h({1});
  h.observe(-5.0);
  h.observe(std::numeric_limits<double>::quiet_NaN());
  h.observe(std::numeric_limits<double>::infinity());
  h.observe(1e300);
  const auto s = h.snapshot();
  EXPECT_EQ(s.counts[0], 2u);
  EXPECT_EQ(s.count, 4u);
  EXPECT_TRUE(std::isfinite(s.sum));
}

// Cumulative counts are monotone and never exceed count, even while observers run.
TEST(Histogram, ConcurrentObserversLoseNothing) {
  LatencyHistogram h(kLatencyBuckets);
  constexpr int kThreads = 4;
  constexpr int kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < kEach; ++i) {
        h.observe(0.0005 * ((i + t) % 20000));
      }
    });
  }
  for (int i = 0; i < 100; ++i) {
    const auto s = h.snapshot();
    for (std::size_t k = 1; k < s.counts.size(); ++k) {
      ASSERT_LE(s.counts[k - 1], s.counts[k]);
    }
    ASSERT_LE(s.counts.back(), s.count);
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(h.snapshot().count, static_cast<std::uint64_t>(kThreads * kEach));
}

}  // namespace
}  // namespace gw

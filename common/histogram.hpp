// A lock-free, fixed-bucket histogram for latencies: observe() is a few relaxed atomic adds, so
// hot paths on any thread can call it. Deliberately no rendering and no labels here: the
// Prometheus text lives in app/metrics.*, which reads snapshot() (cumulative per bucket).
//
// How to wire (lead): own one Histogram per metric next to the other atomic counters, call
// `h.observe(elapsed)` (a duration, or seconds as double) where the wait ends, and copy
// `h.snapshot()` into app::MetricsSnapshot when /metrics is scraped.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace gw {

/// A copy of a histogram: `counts[i]` is the cumulative number of observations <= `bounds[i]`;
/// `count` is all of them (the +Inf bucket). snapshot() derives `count` from the buckets, so
/// they always agree; `sum` may miss observations racing with the copy.
struct HistogramSnapshot {
  std::vector<double> bounds;         ///< upper bounds in seconds, strictly increasing
  std::vector<std::uint64_t> counts;  ///< cumulative, same size as bounds
  std::uint64_t count = 0;            ///< all observations (the +Inf bucket)
  double sum = 0;                     ///< seconds
};

/// `N` finite buckets with upper bounds in seconds (given at construction, strictly
/// increasing, finite); a final +Inf bucket is implicit.
template <std::size_t N>
class Histogram {
 public:
  explicit constexpr Histogram(const std::array<double, N>& bounds) : bounds_(bounds) {}
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  /// Records one observation in seconds. NaN and negative values count as 0.
  void observe(double seconds) noexcept {
    if (!(seconds > 0)) {
      seconds = 0;  // also catches NaN
    } else if (seconds > kMaxSeconds) {
      seconds = kMaxSeconds;  // keeps the nanosecond conversion below defined
    }
    std::size_t i = 0;
    while (i < N && seconds > bounds_[i]) {
      ++i;
    }
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    // Sum in nanoseconds as an integer: atomic<double>::fetch_add is C++20 but not lock-free
    // everywhere, and integer nanoseconds are exact up to ~584 years of total latency.
    sum_ns_.fetch_add(static_cast<std::uint64_t>(seconds * 1e9), std::memory_order_relaxed);
  }

  template <class Rep, class Period>
  void observe(std::chrono::duration<Rep, Period> d) noexcept {
    observe(std::chrono::duration<double>(d).count());
  }

  /// Cumulative counts, as Prometheus wants them.
  HistogramSnapshot snapshot() const {
    HistogramSnapshot s;
    s.bounds.assign(bounds_.begin(), bounds_.end());
    s.counts.reserve(N);
    std::uint64_t running = 0;
    for (std::size_t i = 0; i < N; ++i) {
      running += buckets_[i].load(std::memory_order_relaxed);
      s.counts.push_back(running);
    }
    running += buckets_[N].load(std::memory_order_relaxed);
    s.count = running;
    s.sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
    return s;
  }

 private:
  static constexpr double kMaxSeconds = 1e9;  // ~31 years: no real wait is longer
  std::array<double, N> bounds_;
  std::array<std::atomic<std::uint64_t>, N + 1> buckets_{};  // per bucket, not cumulative
  std::atomic<std::uint64_t> sum_ns_{0};
};

/// Default latency buckets (seconds) for waits measured in milliseconds to seconds:
/// ClientHello wait and channel-open latency.
inline constexpr std::array<double, 12> kLatencyBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                        0.1,   0.25,   0.5,   1,    2.5,   5};

using LatencyHistogram = Histogram<kLatencyBuckets.size()>;

}  // namespace gw

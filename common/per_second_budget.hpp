// A per-second budget for things a peer can trigger at will. Log lines (one per refused
// connection): a flood must not become a disk-filling log flood; lines over the budget are not
// written but counted, and the next line written says how many were left out (warn_thinned;
// metrics and the event log still record every connection). Requests (a session's forward and
// cancel requests): over the budget they are refused.
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>

namespace gw {

/// Thread-safe: the listeners of every I/O thread share one.
class PerSecondBudget {
 public:
  using Clock = std::chrono::steady_clock;

  explicit PerSecondBudget(std::uint32_t lines_per_second) : per_second_(lines_per_second) {}

  /// True when a line may be written at `now`. Then `left_out` is the number of lines refused
  /// since the last one allowed (to be mentioned in this line), else 0.
  bool allow(std::uint64_t& left_out, Clock::time_point now = Clock::now()) {
    std::lock_guard lock(mutex_);
    left_out = 0;
    if (now - window_start_ >= std::chrono::seconds(1)) {
      window_start_ = now;
      used_ = 0;
    }
    if (used_ >= per_second_) {
      ++suppressed_;
      return false;
    }
    ++used_;
    left_out = suppressed_;
    suppressed_ = 0;
    return true;
  }

  /// Lines refused since the last one allowed, and forgets them: for a summary line when no
  /// further line comes to carry the count.
  std::uint64_t take_left_out() {
    std::lock_guard lock(mutex_);
    return std::exchange(suppressed_, 0);
  }

 private:
  std::mutex mutex_;
  const std::uint32_t per_second_;
  Clock::time_point window_start_{};
  std::uint32_t used_ = 0;
  std::uint64_t suppressed_ = 0;
};

/// The suffix for a line written after `left_out` were left out ("" when none were).
inline std::string not_logged(std::uint64_t left_out) {
  return left_out == 0 ? std::string()
                       : " (" + std::to_string(left_out) + " more like it not logged)";
}

/// A warn line through `budget`: `fmt` ends with a `{}` for the not_logged() suffix.
template <class... Args>
void warn_thinned(spdlog::logger& log, PerSecondBudget& budget,
                  spdlog::format_string_t<Args..., std::string> fmt, Args&&... args) {
  if (std::uint64_t left_out = 0; budget.allow(left_out)) {
    log.warn(fmt, std::forward<Args>(args)..., not_logged(left_out));
  }
}

}  // namespace gw

// The node lease's state machine (CLUSTER.md "Failures"): pure, driven by the registry with the
// outcome of each grant and keepalive and the time, so the rules are unit-tested without etcd.
//   none --granted--> live --keepalive failed--> suspect --no success for lost_after--> lost
//   suspect/lost --keepalive ok--> live      (etcd came back and refreshed the lease)
//   any --keepalive answered without TTL--> expired --granted--> live   (re-claim everything)
// New claims are tried while live or suspect (a claim that can't reach etcd answers "registry
// unavailable, retry" on its own); while lost or expired they are refused at once. Routing
// never depends on this state (fail static).
#pragma once

#include <chrono>
#include <cstdint>

namespace gw::cluster {

enum class LeaseState { none, live, suspect, lost, expired };

inline const char* to_string(LeaseState s) {
  switch (s) {
    case LeaseState::none:
      return "none";
    case LeaseState::live:
      return "live";
    case LeaseState::suspect:
      return "suspect";
    case LeaseState::lost:
      return "lost";
    case LeaseState::expired:
      return "expired";
  }
  return "?";
}

class LeaseClock {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LeaseClock(std::chrono::milliseconds lost_after) : lost_after_(lost_after) {}

  void granted(std::int64_t id, Clock::time_point now) {
    id_ = id;
    last_ok_ = now;
    state_ = LeaseState::live;
  }
  void keepalive_ok(Clock::time_point now) {
    if (state_ == LeaseState::expired || state_ == LeaseState::none) {
      return;  // an answer for a lease we already gave up on
    }
    last_ok_ = now;
    state_ = LeaseState::live;
  }
  /// No answer (etcd unreachable, timeout, an error status).
  void keepalive_failed(Clock::time_point now) {
    if (state_ == LeaseState::live) {
      state_ = LeaseState::suspect;
    }
    tick(now);
  }
  /// etcd answered without a TTL: it no longer knows the lease; its keys are gone.
  void keepalive_unknown() {
    if (state_ != LeaseState::none) {
      state_ = LeaseState::expired;
    }
  }
  void tick(Clock::time_point now) {
    if (state_ == LeaseState::suspect && now - last_ok_ >= lost_after_) {
      state_ = LeaseState::lost;
    }
  }

  LeaseState state() const { return state_; }
  std::int64_t id() const { return id_; }
  bool needs_grant() const { return state_ == LeaseState::none || state_ == LeaseState::expired; }
  bool claims_allowed() const {
    return state_ == LeaseState::live || state_ == LeaseState::suspect;
  }
  Clock::time_point last_ok() const { return last_ok_; }

 private:
  std::chrono::milliseconds lost_after_;
  LeaseState state_ = LeaseState::none;
  std::int64_t id_ = 0;
  Clock::time_point last_ok_{};
};

}  // namespace gw::cluster

// What the connections of one endpoint, and of one key, hold buffered toward public clients
// that don't read as fast as their upstream sends: the bridge's buffer plus what the channel
// keeps for it. Each connection is bounded on its own (tunnel/bridge.hpp, the channel window),
// but an endpoint may have thousands of connections: a budget bounds them together.
//
// A BufferBudget is shared by the holders it counts (an endpoint's are on its session's thread;
// a key's are on every thread its sessions use): relaxed atomics. A holder reports what it
// holds through a HeldBytes, which applies the difference to its budgets and gives it back when
// the holder goes. What happens over budget is the owner's decision (sshd/session.cpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace gw::tunnel {

class BufferBudget {
 public:
  explicit BufferBudget(std::size_t limit) : limit_(static_cast<std::int64_t>(limit)) {}
  void add(std::int64_t delta) { held_.fetch_add(delta, std::memory_order_relaxed); }
  std::int64_t held() const { return held_.load(std::memory_order_relaxed); }
  std::size_t limit() const { return static_cast<std::size_t>(limit_); }
  bool over() const { return held() > limit_; }

 private:
  const std::int64_t limit_;
  std::atomic<std::int64_t> held_{0};
};

/// The budgets one connection counts against: its endpoint's and its key's (either may be
/// null: not counted there).
struct BufferBudgets {
  std::shared_ptr<BufferBudget> endpoint;
  std::shared_ptr<BufferBudget> key;
};

/// One holder's share of its budgets.
class HeldBytes {
 public:
  HeldBytes() = default;
  explicit HeldBytes(BufferBudgets budgets) : budgets_(std::move(budgets)) {}
  ~HeldBytes() { set(0); }
  HeldBytes(const HeldBytes&) = delete;
  HeldBytes& operator=(const HeldBytes&) = delete;

  /// The holder now holds `n` bytes.
  void set(std::size_t n) {
    const auto delta = static_cast<std::int64_t>(n) - static_cast<std::int64_t>(held_);
    if (delta == 0) {
      return;
    }
    held_ = n;
    for (BufferBudget* b : {budgets_.endpoint.get(), budgets_.key.get()}) {
      if (b != nullptr) {
        b->add(delta);
      }
    }
  }
  std::size_t get() const { return held_; }
  /// True while either budget is over its limit.
  bool over() const {
    return (budgets_.endpoint && budgets_.endpoint->over()) ||
           (budgets_.key && budgets_.key->over());
  }

 private:
  BufferBudgets budgets_;
  std::size_t held_ = 0;
};

}  // namespace gw::tunnel

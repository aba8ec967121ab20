// Counting things per client IP (ClientHellos still owed, SSH connections not yet
// authenticated), so that one host's flood of half-open connections can't use up a budget
// meant for everyone. Header-only, Asio's address type only.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <mutex>
#include <unordered_map>

namespace gw {

/// Thread-safe: the listeners of every I/O thread share one.
class PerIpCounter {
 public:
  /// Counts one more for `ip`; false (nothing counted) when `ip` is at `limit`.
  bool try_add(const boost::asio::ip::address& ip, int limit) {
    std::lock_guard lock(mutex_);
    int& n = counts_[ip];
    if (n >= limit) {
      return false;
    }
    ++n;
    return true;
  }
  void remove(const boost::asio::ip::address& ip) {
    std::lock_guard lock(mutex_);
    const auto it = counts_.find(ip);
    if (it != counts_.end() && --it->second <= 0) {
      counts_.erase(it);
    }
  }

 private:
  std::mutex mutex_;
  // Asio's own std::hash of the address bytes: no string built per accept. Only IPs with a
  // count are kept, so the map is bounded by the connections open, not by every IP ever seen.
  std::unordered_map<boost::asio::ip::address, int> counts_;
};

}  // namespace gw

// SSH connections that have not authenticated yet, over all I/O threads: the caps on them (like
// OpenSSH's MaxStartups and PerSourceMaxStartups), fair room for a newcomer when the global cap
// is full, and a penalty box for sources that keep holding slots without finishing a login
// (like PerSourcePenalties).
//
// When every slot is taken, a connection from an address holding fewer slots than the address
// holding the most is let in, and that address's oldest connection is closed: a flood from a
// few addresses (each under the per-IP cap) can then never lock out a login from another one.
// (OpenSSH drops at random past a threshold instead; with the cap full that refuses everyone,
// the legitimate user included, until the flood's connections time out.) An address whose
// connections were evicted, or timed out before finishing the key exchange or the login, earns
// 5 s of penalty per such connection (at most 60 s, running down in real time); past two
// connections' worth (three in a row) it is refused new connections until it is back under. One
// slow client behind a shared address costs nobody anything; a flood shuts its own sources out.
//
// Deliberately not here: what a session does (session.cpp), the numbers (ServeConfig).
#pragma once

#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "sshd/session_handle.hpp"

namespace gw::sshd {

class StartupTable : public std::enable_shared_from_this<StartupTable> {
 public:
  using Clock = std::chrono::steady_clock;
  using Address = boost::asio::ip::address;
  enum class Refusal { none, too_many, too_many_from_ip, penalized };
  /// How a connection left the table: only some count against its address.
  enum class Outcome { authenticated, closed, timed_out, evicted };

  /// One connection counted as unauthenticated, from accept until it authenticates or closes
  /// (RAII: it leaves the table exactly once).
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& o) noexcept { *this = std::move(o); }
    Slot& operator=(Slot&& o) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { release(Outcome::closed); }
    explicit operator bool() const { return table_ != nullptr; }
    /// The session the slot belongs to, so a newcomer can evict it.
    void bind(std::weak_ptr<SessionHandle> session);
    void release(Outcome how);

   private:
    friend class StartupTable;
    std::shared_ptr<StartupTable> table_;
    Address ip_;
    std::uint64_t token_ = 0;
  };

  struct Acquired {
    Slot slot;  ///< empty when refused
    Refusal refusal = Refusal::none;
    /// A connection closed to make room (its slot is already given back): evict() it.
    std::shared_ptr<SessionHandle> evicted;
  };

  StartupTable(std::int64_t max_total, int max_per_ip)
      : max_total_(max_total), max_per_ip_(max_per_ip) {}

  /// Thread-safe.
  Acquired acquire(const Address& ip, Clock::time_point now = Clock::now());
  /// Connections in the table now.
  std::int64_t size() const;

  static constexpr auto kPenaltyPerStrike = std::chrono::seconds(5);
  static constexpr auto kPenaltyThreshold = std::chrono::seconds(12);  // past two strikes
  static constexpr auto kMaxPenalty = std::chrono::seconds(60);

 private:
  struct Entry {
    std::uint64_t token;
    Clock::time_point since;
    std::weak_ptr<SessionHandle> session;
  };
  void leave(const Address& ip, std::uint64_t token, Outcome how, Clock::time_point now);
  void strike(const Address& ip, Clock::time_point now);  // under the lock

  const std::int64_t max_total_;
  const int max_per_ip_;
  mutable std::mutex mutex_;
  std::unordered_map<Address, std::vector<Entry>> by_ip_;
  std::unordered_map<Address, Clock::time_point> penalized_until_;
  std::int64_t total_ = 0;
  std::uint64_t next_token_ = 1;
};

}  // namespace gw::sshd

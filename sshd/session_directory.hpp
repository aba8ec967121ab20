// Every live SSH session, for what looks across sessions: key reloads (revocation), limits per
// key, the admin API, shutdown. Holds weak pointers: sessions own themselves. Copy under the
// lock, act outside it (posting to each session's own thread).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "sshd/session_handle.hpp"
#include "tunnel/buffer_budget.hpp"

namespace gw::sshd {

class SessionDirectory {
 public:
  void add(std::uint64_t id, std::weak_ptr<SessionHandle> session) {
    std::lock_guard lock(mutex_);
    sessions_[id] = Entry{std::move(session), {}, 0};
  }
  /// Records the key a session authenticated with; returns how many sessions (this one
  /// included) now use it.
  std::size_t set_key(std::uint64_t id, const std::string& fingerprint) {
    std::lock_guard lock(mutex_);
    sessions_[id].fingerprint = fingerprint;
    std::size_t n = 0;
    for (const auto& [other, e] : sessions_) {
      n += e.fingerprint == fingerprint;
    }
    return n;
  }
  void set_endpoints(std::uint64_t id, std::size_t endpoints) {
    std::lock_guard lock(mutex_);
    sessions_[id].endpoints = endpoints;
  }
  /// Endpoints held by every session of this key.
  std::size_t endpoints_of_key(const std::string& fingerprint) const {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& [id, e] : sessions_) {
      n += e.fingerprint == fingerprint ? e.endpoints : 0;
    }
    return n;
  }
  /// The buffer budget every session of this key shares (made with `limit` by the first one;
  /// kept while some session holds it).
  std::shared_ptr<tunnel::BufferBudget> key_budget(const std::string& fingerprint,
                                                   std::size_t limit) {
    std::lock_guard lock(mutex_);
    std::erase_if(budgets_, [](const auto& kv) { return kv.second.expired(); });
    auto& weak = budgets_[fingerprint];
    auto budget = weak.lock();
    if (!budget) {
      budget = std::make_shared<tunnel::BufferBudget>(limit);
      weak = budget;
    }
    return budget;
  }
  /// Bytes every key's connections hold buffered (each connection counts against its key's).
  std::int64_t buffered_bytes() const {
    std::lock_guard lock(mutex_);
    std::int64_t n = 0;
    for (const auto& [fp, weak] : budgets_) {
      if (const auto b = weak.lock()) {
        n += b->held();
      }
    }
    return n;
  }
  void remove(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    sessions_.erase(id);
  }
  std::shared_ptr<SessionHandle> find(std::uint64_t id) const {
    std::lock_guard lock(mutex_);
    const auto it = sessions_.find(id);
    return it == sessions_.end() ? nullptr : it->second.session.lock();
  }
  std::vector<std::shared_ptr<SessionHandle>> all() const {
    std::vector<std::shared_ptr<SessionHandle>> out;
    std::lock_guard lock(mutex_);
    out.reserve(sessions_.size());
    for (const auto& [id, e] : sessions_) {
      if (auto s = e.session.lock()) {
        out.push_back(std::move(s));
      }
    }
    return out;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return sessions_.size();
  }

 private:
  struct Entry {
    std::weak_ptr<SessionHandle> session;
    std::string fingerprint;  ///< empty until authenticated
    std::size_t endpoints;
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, Entry> sessions_;
  std::unordered_map<std::string, std::weak_ptr<tunnel::BufferBudget>> budgets_;
};

}  // namespace gw::sshd

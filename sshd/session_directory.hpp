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
};

}  // namespace gw::sshd

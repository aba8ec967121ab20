// What the rest of the gateway (app/: the admin API, key reload, shutdown) may do with a live
// SSH session, and what it may read of it. Deliberately no libssh here: app/ sees sessions
// only through this interface, the session itself lives in session.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "keys/key_store.hpp"

namespace gw::sshd {

/// What the admin API shows of an endpoint; a copy, safe to read from any thread.
struct EndpointInfo {
  std::string id, url;
  bool pool = false;
  std::chrono::system_clock::time_point created_at;
  std::uint64_t open_connections = 0, bytes_in = 0, bytes_out = 0;
  bool internal = false;  ///< binding "internal" (ssh -L / -W only) rather than "public"
};

/// What the admin API shows of a session; a copy, safe to read from any thread.
struct SessionInfo {
  std::uint64_t id = 0;
  std::string peer, user, key_fingerprint, key_name, state;
  std::chrono::system_clock::time_point started_at;
  std::uint64_t open_connections = 0;
  std::vector<EndpointInfo> endpoints;
};

/// What the admin API says when an admin closes a session without a message of their own.
inline constexpr const char* kAdminCloseMessage = "session closed by the gateway administrator";

/// Every call is thread-safe: it posts to the session's own thread (or reads its published
/// snapshot) and returns at once.
class SessionHandle {
 public:
  virtual ~SessionHandle() = default;
  /// The latest published snapshot.
  virtual SessionInfo info() const = 0;
  /// The admin ends the session; `message` (may be empty) is shown to the user and recorded in
  /// the session_ended event.
  virtual void close_from_outside(std::string message) = 0;
  /// The gateway is shutting down: endpoints stop taking connections at once; the session ends
  /// when its open connections have finished.
  virtual void drain() = 0;
  /// authorized_keys changed: a session whose key is gone or expired is closed with a message;
  /// forwards the key may no longer hold are removed.
  virtual void keys_changed(std::shared_ptr<const keys::KeyStore> store) = 0;
  /// Not authenticated yet, and closed to make room for a login from another address when
  /// every unauthenticated slot is taken (startup_table.hpp). Ignored once authenticated.
  virtual void evict() = 0;
};

}  // namespace gw::sshd

// What every SSH session shares: configuration, the endpoint registry, the current key
// snapshot, counters and the logger. Built once by app/ and passed in (no globals).
#pragma once

#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/histogram.hpp"
#include "common/per_second_budget.hpp"
#include "keys/key_store.hpp"
#include "sshd/session_directory.hpp"
#include "sshd/startup_table.hpp"
#include "tunnel/bridge.hpp"
#include "tunnel/claim_gate.hpp"
#include "tunnel/cluster_routes.hpp"
#include "tunnel/endpoint_registry.hpp"
#include "tunnel/events.hpp"
#include "tunnel/hostname.hpp"

namespace gw::sshd {

/// The key snapshot sessions authenticate against; reload swaps it (live sessions keep
/// the snapshot they authenticated with).
class KeySource {
 public:
  explicit KeySource(std::shared_ptr<const keys::KeyStore> store) : store_(std::move(store)) {}
  std::shared_ptr<const keys::KeyStore> get() const {
    std::lock_guard lock(mutex_);
    return store_;
  }
  void set(std::shared_ptr<const keys::KeyStore> store) {
    std::lock_guard lock(mutex_);
    store_ = std::move(store);
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const keys::KeyStore> store_;
};

/// Outcome counters; tests and /metrics read them. The data path's own (bytes, active
/// connections, channel opens) are the bridges', in tunnel::BridgeStats.
struct SshStats : tunnel::BridgeStats {
  std::atomic<std::uint64_t> sessions_accepted{0};
  std::atomic<std::uint64_t> sessions_refused_startups{0};
  std::atomic<std::uint64_t> auth_failures{0};
  std::atomic<std::uint64_t> forwards_refused{0};
  std::atomic<std::uint64_t> connections_cidr_denied{0};
  std::atomic<std::uint64_t> connections_over_endpoint_limit{0};
  /// Refused because the session's client already has kMaxOpensInFlight opens unanswered.
  std::atomic<std::uint64_t> connections_over_open_limit{0};
  /// Channels closed because the client broke the protocol (data past the window, window
  /// overflow).
  std::atomic<std::uint64_t> channel_violations{0};
  /// Channel and global requests refused over a session's per-second budget (session.cpp).
  std::atomic<std::uint64_t> requests_refused{0};
  /// Times a session's input was paused for sending too many non-data messages in a second.
  std::atomic<std::uint64_t> sessions_paused{0};
  /// Connections closed to keep an endpoint's or key's buffered bytes within budget.
  std::atomic<std::uint64_t> buffer_budget_closes{0};
  std::atomic<std::uint64_t> next_endpoint_id{1};
  /// direct-tcpip opens (ssh -L / -W to internal endpoints) refused before any channel opened.
  std::atomic<std::uint64_t> direct_refused{0};
  std::atomic<std::uint64_t> next_internal_conn_id{0};  ///< see direct_channel.cpp
};

struct ServerContext {
  std::shared_ptr<tunnel::EndpointRegistry> registry;
  /// Cluster mode only (--cluster-etcd): claims must also win there; null on a single node.
  std::shared_ptr<tunnel::ClaimGate> claim_gate;
  /// Cluster mode with a relay: where another node's internal endpoint lives, and the way to
  /// carry a teammate's direct-tcpip channel there. Null otherwise.
  std::shared_ptr<tunnel::ClusterRoutes> cluster_routes;
  std::shared_ptr<tunnel::Relay> relay;
  std::shared_ptr<KeySource> keys;
  tunnel::Hostname domain = *tunnel::Hostname::parse("localhost", false);
  std::uint16_t advertise_port = 443;
  std::chrono::seconds idle_timeout{};             ///< from ServeConfig, like the limits below
  std::chrono::seconds tls_handshake_timeout{60};  ///< 0: no handshake watch
  std::chrono::seconds login_grace{};
  std::chrono::seconds keepalive_interval{15};  ///< SSH keepalives on idle sessions
  /// Without a session channel (`ssh -N`), endpoints start routing after this grace.
  std::chrono::milliseconds no_command_grace{300};
  /// With a session channel but no exec/shell yet: how long to wait for the command.
  std::chrono::milliseconds command_wait{3000};
  // The limits are set from ServeConfig: app/cli.hpp holds their defaults and why.
  /// Like OpenSSH's MaxStartups and PerSourceMaxStartups: connections that have not yet
  /// authenticated, over all clients and from one IP, with room for newcomers and a penalty
  /// box (startup_table.hpp). Set from ServeConfig's max_unauthenticated(_per_ip).
  std::shared_ptr<StartupTable> startups = std::make_shared<StartupTable>(256, 32);
  /// Lines an attacker can trigger at will (refused connections, rejected keys) are thinned to
  /// 50 a second; metrics and events still count every one.
  std::shared_ptr<PerSecondBudget> refusal_lines = std::make_shared<PerSecondBudget>(50);
  std::uint64_t max_connections_per_endpoint = 0;  ///< one session's forward
  std::size_t max_sessions_per_key = 0;
  std::size_t max_endpoints_per_key = 0;  ///< over all of the key's sessions
  std::shared_ptr<spdlog::logger> log;
  std::shared_ptr<spdlog::logger> tunnel_log;
  std::shared_ptr<SshStats> stats = std::make_shared<SshStats>();
  std::shared_ptr<SessionDirectory> sessions = std::make_shared<SessionDirectory>();
  std::shared_ptr<tunnel::EventSink> events = std::make_shared<tunnel::NullEventSink>();
};

}  // namespace gw::sshd

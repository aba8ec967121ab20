// The ingress side of the relay: tunnel::Relay. For a visitor whose route lives on another
// node it takes a warm spare to that node (a relay connection already past its handshake, see
// SpareShelf in the .cpp: kSparesPerPeer per I/O thread, made after the first visitor to the
// peer, replaced after use and after spare_idle) or else dials the node's relay address
// (TCP_NODELAY, connect 1 s) and runs mutual TLS (2 s; the peer's certificate must name the
// route's node id; later connections to a peer resume), sends the PROXY v2 header (visitor and
// listener addresses, SNI, this node's connection id, the route's session and revision) and the
// ClientHello it already read without waiting, and reads the status byte. ok: the visitor's socket
// and the relay stream are bridged by the one byte pump, tunnel::Bridge, with a RelayChannel as its
// channel (so half-close, back-pressure and idle timeouts are the local path's). stale: asks the
// routes once more (the name may have moved, possibly here), then TLS alert 112. Unreachable peer:
// alert 80 and the peer is skipped for 5 s (ownership never moves because a peer is unreachable). A
// spare that breaks before the status (the peer restarted) is replaced by a fresh dial for the same
// visitor. Deliberately not here: tcp_connection_closed (the owner writes it), routing
// (ClusterRoutes).
#pragma once

#include <spdlog/logger.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/relay_stats.hpp"
#include "cluster/relay_tls.hpp"
#include "tunnel/bridge.hpp"
#include "tunnel/cluster_routes.hpp"
#include "tunnel/endpoint_registry.hpp"

namespace gw::cluster {

class DeadlineSweep;
class SpareShelf;

class RelayDialer final : public tunnel::Relay, public std::enable_shared_from_this<RelayDialer> {
 public:
  /// `contexts`: the I/O threads relay() is called on (each gets a timer that checks its
  /// bridges' idle deadlines once a second). `routes`: asked again on "stale"; `local`: the
  /// name may have moved to this node meanwhile. `bridge`: idle timeout and buffer caps.
  RelayDialer(std::shared_ptr<RelayTls> tls, RelayConfig config,
              std::shared_ptr<tunnel::ClusterRoutes> routes,
              std::shared_ptr<tunnel::EndpointRegistry> local,
              const std::vector<boost::asio::io_context*>& contexts, tunnel::BridgeConfig bridge,
              std::shared_ptr<RelayStats> stats, std::shared_ptr<spdlog::logger> log);
  ~RelayDialer() override;

  void relay(tunnel::IncomingConnection conn, tunnel::RemoteRoute route) override;

  const RelayStats& stats() const { return *stats_; }
  /// True while `node_id` is skipped after a failure (thread-safe).
  bool quarantined(const std::string& node_id) const;

 private:
  friend class Outbound;
  void quarantine(const std::string& node_id);
  void retry_or_refuse(tunnel::IncomingConnection conn, int attempt);
  void dial(tunnel::IncomingConnection conn, tunnel::RemoteRoute route, int attempt,
            bool use_spare);
  DeadlineSweep* sweep_for(const boost::asio::any_io_executor& ex);
  SpareShelf* shelf_for(const boost::asio::any_io_executor& ex);

  std::shared_ptr<RelayTls> tls_;
  RelayConfig config_;
  std::shared_ptr<tunnel::ClusterRoutes> routes_;
  std::shared_ptr<tunnel::EndpointRegistry> local_;
  tunnel::BridgeConfig bridge_;
  std::shared_ptr<RelayStats> stats_;
  std::shared_ptr<spdlog::logger> log_;
  std::map<boost::asio::io_context*, std::shared_ptr<DeadlineSweep>> sweeps_;
  std::map<boost::asio::io_context*, std::shared_ptr<SpareShelf>> shelves_;
  mutable std::mutex mutex_;
  std::map<std::string, std::chrono::steady_clock::time_point, std::less<>> quarantine_;
};

}  // namespace gw::cluster

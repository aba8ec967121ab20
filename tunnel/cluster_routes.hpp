// The seam between the public listener and cluster mode (cluster/, on etcd). sni_router and
// sshd see only these interfaces; nothing outside cluster/ knows etcd or the relay. Without
// --cluster-etcd none of them exists and the listener routes through EndpointRegistry alone, as
// on a single node.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tunnel/endpoint.hpp"

namespace gw::tunnel {

/// A route owned by a session on another node, as the cluster registry's watch cache holds it.
struct RemoteRoute {
  std::string name;             ///< the registered name that matched (exact or "*.suffix")
  std::string node_id;          ///< the owner node
  std::string relay;            ///< its relay address, HOST:PORT
  std::string session_id;       ///< the owner's session (the relay's custom TLV carries it)
  std::int64_t revision = 0;    ///< etcd mod_revision of the route key
  bool internal = false;        ///< an internal endpoint: never for the public port
  std::string key_fingerprint;  ///< the owner's key (who an internal name belongs to)
};

/// The cluster-wide route table (every node's routes, this node's own included).
class ClusterRoutes {
 public:
  virtual ~ClusterRoutes() = default;
  /// Thread-safe. Applies the single-node precedence (exact, then the most specific wildcard;
  /// pools round-robin over local and remote members) over the whole cluster and answers the
  /// remote route when the winner lives on another node; nullopt when the winner is local (the
  /// listener then uses EndpointRegistry::find) or nothing serves the name.
  virtual std::optional<RemoteRoute> find_remote(std::string_view server_name) = 0;
  /// Thread-safe. Whether node `node_id` is registered with relay address `relay`: the relay
  /// keeps warm connections only to nodes that are still there.
  virtual bool has_node(std::string_view node_id, std::string_view relay) const = 0;
};

/// Carries a routed public connection to the node that owns its route.
class Relay {
 public:
  virtual ~Relay() = default;
  /// Thread-safe; called on the accepting thread. Dials the owner over mutual TLS, sends the
  /// PROXY v2 header (with the teammate's session when `conn.internal`: a direct-tcpip channel
  /// to an internal endpoint) and the ClientHello bytes in `conn.peeked`, then splices. On failure
  /// (peer unreachable, status "denied"/"overloaded") answers the visitor with the TLS alert of
  /// CLUSTER.md itself; on "stale route" asks `routes` again once.
  virtual void relay(IncomingConnection conn, RemoteRoute route) = 0;
};

}  // namespace gw::tunnel

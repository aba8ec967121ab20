// The seam between the public side and the SSH side: a TunnelEndpoint takes routed public
// connections. sshd implements it; sni_router only sees this interface. Deliberately no
// libssh types here.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tunnel/events.hpp"

namespace gw::tunnel {

/// A connection routed to an endpoint: a public TCP connection whose ClientHello has been read,
/// or (internal endpoints) one end of a local socket pair whose other end a teammate's
/// direct-tcpip channel is bridged to. Hence a generic stream socket: the owner's side treats
/// both alike (same CIDR rules, limits, bridge and event).
struct IncomingConnection {
  boost::asio::generic::stream_protocol::socket socket;  ///< on the accepting thread's context
  std::vector<std::byte> peeked;  ///< bytes already read (the ClientHello): replay first
  std::string server_name;        ///< normalised SNI (internal: the name the channel asked for)
  boost::asio::ip::tcp::endpoint client;  ///< the public client (internal: the teammate's SSH)
  std::uint64_t id = 0;                   ///< connection id, logged as conn=t<id>
  std::chrono::steady_clock::time_point accepted_at{};  ///< the router's accept stamps
  SystemTime accepted_wall{};
  bool internal = false;  ///< arrived through a direct-tcpip channel, not the public port
  std::uint64_t client_session_id = 0;  ///< internal: the teammate's session and key
  std::string client_key_fingerprint{};

  /// What its ConnectionClosed event starts from.
  ConnectionStart start() const {
    return ConnectionStart{id,
                           client.address().to_string(),
                           client.port(),
                           server_name,
                           accepted_at,
                           accepted_wall,
                           internal,
                           client_session_id,
                           client_key_fingerprint};
  }
};

class TunnelEndpoint {
 public:
  virtual ~TunnelEndpoint() = default;
  /// Thread-safe: hands the connection to the endpoint's owner, which opens a channel and
  /// bridges it, or answers with a TLS alert and closes when it can't.
  virtual void deliver(IncomingConnection conn) = 0;
  /// Thread-safe: another session of the same key took `name` over (--takeover).
  virtual void displaced(const std::string& name) = 0;
};

}  // namespace gw::tunnel

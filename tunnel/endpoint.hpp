// The seam between the public side and the SSH side: a TunnelEndpoint takes routed public
// connections. sshd implements it; sni_router only sees this interface. Deliberately no
// libssh types here.
#pragma once

#include <sys/socket.h>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tunnel/events.hpp"
#include "tunnel/public_stream.hpp"
#include "tunnel/tls_alert.hpp"

namespace gw::tunnel {

/// A connection routed to an endpoint: a public TCP connection whose ClientHello has been read,
/// or (internal endpoints) one end of a local socket pair whose other end a teammate's
/// direct-tcpip channel is bridged to. Hence a generic stream socket: the owner's side treats
/// both alike (same CIDR rules, limits, bridge and event).
struct IncomingConnection {
  boost::asio::generic::stream_protocol::socket socket;  ///< on the accepting thread's context
  std::vector<std::byte> peeked;  ///< bytes already read (the ClientHello): replay first
  std::string server_name;        ///< normalised SNI (internal: the name the channel asked for)
  /// The visitor's address: the socket's peer, or what a trusted PROXY header named (internal:
  /// the teammate's SSH address).
  boost::asio::ip::tcp::endpoint client;
  std::uint64_t id = 0;                                 ///< connection id, logged as conn=t<id>
  std::chrono::steady_clock::time_point accepted_at{};  ///< the router's accept stamps
  SystemTime accepted_wall{};
  /// Set for a connection relayed from another cluster node: its bytes come over this stream
  /// (the relay's TLS), and `socket` is unused. The helpers below pick the right one.
  std::unique_ptr<PublicStream> stream;
  std::string ingress_node;  ///< with `stream`: the node the visitor reached
  bool internal = false;     ///< arrived through a direct-tcpip channel, not the public port
  std::uint64_t client_session_id = 0;  ///< internal: the teammate's session and key
  std::string client_key_fingerprint{};

  /// The transport for a Bridge: the relay stream, or the socket wrapped.
  std::unique_ptr<PublicStream> take_stream() {
    if (stream) {
      return std::move(stream);
    }
    return std::make_unique<SocketStream>(std::move(socket));
  }
  /// The address the visitor connected to, when `socket` is TCP (the public port); nullopt
  /// for a local pair or a closed socket.
  std::optional<boost::asio::ip::tcp::endpoint> local_tcp_endpoint() const {
    boost::system::error_code ec;
    const auto local = socket.local_endpoint(ec);
    const int family = local.protocol().family();
    boost::asio::ip::tcp::endpoint out;
    if (ec || (family != AF_INET && family != AF_INET6) || local.size() > out.capacity()) {
      return std::nullopt;
    }
    std::memcpy(out.data(), local.data(), local.size());
    out.resize(local.size());
    return out;
  }
  /// Refuses with a TLS alert (for the visitor, through the relay when relayed); the bytes sent.
  std::size_t alert_and_close(std::uint8_t description) {
    return stream ? stream->alert_and_close(description)
                  : send_alert_and_close(socket, description);
  }
  void close() {
    if (stream) {
      stream->close();
    } else {
      boost::system::error_code ec;
      socket.close(ec);
    }
  }

  /// What its ConnectionClosed event starts from.
  ConnectionStart start() const {
    return ConnectionStart{id,
                           client.address().to_string(),
                           client.port(),
                           server_name,
                           accepted_at,
                           accepted_wall,
                           ingress_node,
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
  /// The SSH session holding it (0: none); the cluster relay checks the route it was sent for.
  virtual std::uint64_t session_id() const { return 0; }
};

}  // namespace gw::tunnel

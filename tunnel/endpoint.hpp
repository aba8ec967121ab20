// The seam between the public side and the SSH side: a TunnelEndpoint takes routed public
// connections. sshd implements it; sni_router only sees this interface. Deliberately no
// libssh types here.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tunnel/events.hpp"

namespace gw::tunnel {

/// A public TCP connection whose ClientHello has been read and routed.
struct IncomingConnection {
  boost::asio::ip::tcp::socket socket;  ///< bound to the accepting thread's io_context
  std::vector<std::byte> peeked;        ///< bytes already read (the ClientHello): replay first
  std::string server_name;              ///< normalised SNI
  boost::asio::ip::tcp::endpoint client;
  std::uint64_t id = 0;                                 ///< connection id, logged as conn=t<id>
  std::chrono::steady_clock::time_point accepted_at{};  ///< the router's accept stamps
  SystemTime accepted_wall{};

  /// What its ConnectionClosed event starts from.
  ConnectionStart start() const {
    return ConnectionStart{
        id, client.address().to_string(), client.port(), server_name, accepted_at, accepted_wall};
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

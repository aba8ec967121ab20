// The owner side of the relay: accepts relay connections from peer nodes on --relay-listen (on
// every I/O thread), runs the mutual TLS handshake (a client without a certificate of the
// cluster CA is refused), reads the PROXY v2 header (deadline and byte cap), finds the LOCAL
// endpoint of the session the header's route TLV names, answers one status byte and hands the
// connection to that endpoint with the visitor's address as its client and the bytes after the
// header (the ClientHello) as `peeked`. From there the session bridges the TLS stream exactly
// like a local visitor's socket: its CIDR rules, limits, channel originator and the one
// tcp_connection_closed record all see the visitor. Deliberately never routes further (no
// loops): a name this node doesn't serve for that session is "stale", and the ingress decides.
//
// Wire, after the TLS handshake:   ingress -> owner: PROXY v2 header, then the visitor's bytes
//                                  owner -> ingress: status u8, then the upstream's bytes
// Status: 0 ok, 1 stale route, 2 overloaded, 3 denied by policy (see Status).
// Protocol 2 (ALPN "snigate/2", both nodes of this version): the visitor's bytes each way are
// framed (framed_stream.hpp), and after both end frames the connection waits here for the next
// header, as a fresh one does: one handshake per connection, not per visitor. Protocol 1 (a
// peer that offers no ALPN): raw bytes, the connection ends with its visitor.
#pragma once

#include <spdlog/logger.h>

#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <vector>

#include "cluster/relay_stats.hpp"
#include "cluster/relay_tls.hpp"
#include "common/listen.hpp"
#include "tunnel/endpoint_registry.hpp"

namespace gw::cluster {

/// The owner's answer, one byte after the header.
enum class Status : std::uint8_t {
  ok = 0,          ///< the endpoint took it; the upstream's bytes follow
  stale = 1,       ///< no local endpoint of that session serves the name: ask the routes again
  overloaded = 2,  ///< the owner can't take more now (reserved: the owner closes instead today)
  denied = 3,      ///< refused by policy (reserved: CIDR rules answer through the stream)
};

/// Relayed connections are numbered from here, so their conn=t<N> never collides with the
/// public listener's on the same node.
inline constexpr std::uint64_t kRelayConnIdBase = std::uint64_t{1} << 40;

class RelayListener {
 public:
  RelayListener(std::shared_ptr<RelayTls> tls, RelayConfig config,
                std::shared_ptr<tunnel::EndpointRegistry> registry,
                std::shared_ptr<RelayStats> stats, std::shared_ptr<spdlog::logger> log);
  ~RelayListener();

  /// Listens on `where` once per context; returns the bound address. Throws on bind errors.
  boost::asio::ip::tcp::endpoint listen(const std::vector<boost::asio::io_context*>& contexts,
                                        const boost::asio::ip::tcp::endpoint& where);
  /// Thread-safe: stops accepting.
  void stop() { acceptors_.stop(); }
  const RelayStats& stats() const;

  struct Shared;  ///< what the connections share (they may outlive a call into this object)

 private:
  void on_accept(boost::asio::ip::tcp::socket socket);

  std::shared_ptr<RelayTls> tls_;
  std::shared_ptr<Shared> shared_;
  AcceptorSet acceptors_;
};

}  // namespace gw::cluster

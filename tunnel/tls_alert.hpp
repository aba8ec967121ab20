// Sending a TLS alert and closing, for connections the gateway can't route. Both the router
// (no route) and the SSH side (upstream refused the channel) do it. The record bytes come
// from common/tls_alert.hpp, which the pure parser library shares.
#pragma once

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>

#include "common/tls_alert.hpp"

namespace gw::tunnel {

/// Best effort, never blocks: writes the alert if the socket buffer takes it, then closes.
/// A lost alert is acceptable; a stalled thread is not. Returns the bytes written (for the
/// connection's bytes_out). Any Asio stream socket (TCP, or a local pair in tests).
template <class Socket>
std::size_t send_alert_and_close(Socket& socket, std::uint8_t description) {
  const auto alert = gw::make_alert(description);
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  const std::size_t n = socket.write_some(boost::asio::buffer(alert), ec);
  socket.shutdown(Socket::shutdown_send, ec);
  socket.close(ec);
  return n;  // 0 when the write failed
}

}  // namespace gw::tunnel

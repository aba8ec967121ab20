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
/// A lost alert is acceptable; a stalled thread is not.
inline void send_alert_and_close(boost::asio::ip::tcp::socket& socket, std::uint8_t description) {
  const auto alert = gw::make_alert(description);
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  socket.write_some(boost::asio::buffer(alert), ec);
  socket.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ec);
  socket.close(ec);
}

}  // namespace gw::tunnel

#include "tunnel/public_stream.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "tunnel/tls_alert.hpp"

namespace gw::tunnel {

SocketStream::SocketStream(Socket socket)
    : socket_(std::move(socket)), protocol_(AF_INET, SOCK_STREAM) {
  boost::system::error_code ec;
  const auto local = socket_.local_endpoint(ec);
  if (!ec) {
    protocol_ = local.protocol();
  }
  socket_.non_blocking(true, ec);
}

PublicStream::Result SocketStream::read_some(std::span<std::byte> into) {
  boost::system::error_code ec;
  const std::size_t n = socket_.read_some(boost::asio::buffer(into.data(), into.size()), ec);
  if (ec == boost::asio::error::would_block) {
    return {Io::would_block};
  }
  if (ec == boost::asio::error::eof) {
    return {Io::eof};
  }
  if (ec) {
    return {Io::error};
  }
  return {Io::ok, n};
}

PublicStream::Result SocketStream::write_some(std::span<const std::byte> from) {
  // send(), not write_some(): MSG_NOSIGNAL and MSG_DONTWAIT in one call, no Asio bookkeeping.
  const ssize_t n =
      ::send(socket_.native_handle(), from.data(), from.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n >= 0) {
    return {Io::ok, static_cast<std::size_t>(n)};
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    return {Io::would_block};
  }
  return {Io::error};
}

void SocketStream::wait_readable(Wake wake) {
  socket_.async_wait(Socket::wait_read,
                     [wake = std::move(wake)](const boost::system::error_code& ec) { wake(!ec); });
}

void SocketStream::wait_writable(Wake wake) {
  socket_.async_wait(Socket::wait_write,
                     [wake = std::move(wake)](const boost::system::error_code& ec) { wake(!ec); });
}

void SocketStream::shutdown_send() {
  boost::system::error_code ec;
  socket_.shutdown(Socket::shutdown_send, ec);
}

std::size_t SocketStream::alert_and_close(std::uint8_t description) {
  return send_alert_and_close(socket_, description);
}

void SocketStream::close() {
  boost::system::error_code ec;
  socket_.close(ec);
}

void SocketStream::cancel_waits() {
  boost::system::error_code ec;
  socket_.cancel(ec);
}

bool SocketStream::detach() { return release_descriptor(socket_, detached_fd_); }

bool SocketStream::attach(boost::asio::io_context& ioc) {
  if (!assign_descriptor(socket_, protocol_, detached_fd_, ioc)) {
    ::close(detached_fd_);
    detached_fd_ = -1;
    return false;
  }
  return true;
}

}  // namespace gw::tunnel

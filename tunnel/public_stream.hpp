// The public side of a Bridge: the byte stream that leads to the visitor. On the node the
// visitor reached it is the visitor's own TCP socket (SocketStream); on a cluster node that owns
// the route but not the visitor it is the relay's TLS stream from the ingress node (cluster/).
// A small readiness interface, non-blocking calls plus one-shot waits, because that is what the
// Bridge's pump is built on (read only when the channel can take bytes, write straight from the
// channel's buffer); one virtual call per syscall costs nothing next to the syscall.
// Threading: one thread at a time; detach()/attach() move it to another io_context.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

namespace gw::tunnel {

class PublicStream {
 public:
  enum class Io { ok, would_block, eof, error };
  struct Result {
    Io status = Io::error;
    std::size_t bytes = 0;  ///< for ok
  };
  /// Runs once, on the stream's executor: true when the stream may be ready, false when the
  /// wait was cancelled (the stream closed).
  using Wake = std::function<void(bool ready)>;

  virtual ~PublicStream() = default;
  /// Non-blocking. ok with bytes > 0, would_block (then wait_readable), eof or error.
  virtual Result read_some(std::span<std::byte> into) = 0;
  /// Non-blocking. ok with the bytes taken (possibly fewer), would_block, or error. After
  /// would_block, the next write must start with the same bytes (TLS may hold a record of them).
  virtual Result write_some(std::span<const std::byte> from) = 0;
  virtual void wait_readable(Wake wake) = 0;
  virtual void wait_writable(Wake wake) = 0;
  /// Half-close: the far end reads EOF after what was written (TCP FIN, TLS close_notify).
  virtual void shutdown_send() = 0;
  /// Best effort, never blocks: a fatal TLS alert record to the visitor, then close. The bytes
  /// written (for bytes_out).
  virtual std::size_t alert_and_close(std::uint8_t description) = 0;
  virtual void close() = 0;
  /// Ends every wait in flight "not ready" and keeps the stream open (it changes hands).
  virtual void cancel_waits() = 0;
  virtual boost::asio::any_io_executor executor() = 0;
  /// Leaves the current io_context (nothing may be pending): then attach() on the target's
  /// thread. The descriptor and any TLS state stay.
  virtual bool detach() = 0;
  virtual bool attach(boost::asio::io_context& ioc) = 0;
};

/// detach()/attach() for a stream over a socket: the descriptor leaves `socket`'s io_context
/// into `fd`, then a socket on `ioc` takes the same descriptor (so a TLS session's BIO on it
/// stays valid). On failure `fd` still holds the descriptor: the caller closes it.
template <class Socket>
bool release_descriptor(Socket& socket, int& fd) {
  boost::system::error_code ec;
  fd = socket.release(ec);
  return !ec;
}
template <class Socket>
bool assign_descriptor(Socket& socket, const typename Socket::protocol_type& protocol, int& fd,
                       boost::asio::io_context& ioc) {
  Socket moved(ioc);
  boost::system::error_code ec;
  moved.assign(protocol, fd, ec);
  if (ec) {
    return false;
  }
  fd = -1;
  socket = std::move(moved);
  socket.non_blocking(true, ec);
  return true;
}

/// A plain stream socket (TCP, or a local pair in tests): the single-node path.
class SocketStream final : public PublicStream {
 public:
  using Socket = boost::asio::generic::stream_protocol::socket;
  explicit SocketStream(Socket socket);

  Result read_some(std::span<std::byte> into) override;
  Result write_some(std::span<const std::byte> from) override;
  void wait_readable(Wake wake) override;
  void wait_writable(Wake wake) override;
  void shutdown_send() override;
  std::size_t alert_and_close(std::uint8_t description) override;
  void close() override;
  void cancel_waits() override;
  boost::asio::any_io_executor executor() override { return socket_.get_executor(); }
  bool detach() override;
  bool attach(boost::asio::io_context& ioc) override;

 private:
  Socket socket_;
  boost::asio::generic::stream_protocol protocol_;
  int detached_fd_ = -1;
};

}  // namespace gw::tunnel

// A relay connection's TLS over a non-blocking TCP socket, as a tunnel::PublicStream: the
// owner node's Bridge pumps it as the visitor's side, the ingress node's RelayChannel as the
// channel's. OpenSSL works the descriptor itself (SSL_set_fd); readiness comes from Asio waits,
// and a wait for reading returns at once while OpenSSL still holds decrypted bytes. Deliberately
// not here: deadlines (the caller closes the stream when its timer fires) and verification
// policy (RelayTls).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <functional>

#include "cluster/relay_tls.hpp"
#include "tunnel/public_stream.hpp"

namespace gw::cluster {

class TlsStream final : public tunnel::PublicStream {
 public:
  /// `ssl` from RelayTls (server() context, or client_for()); the socket must be connected.
  TlsStream(boost::asio::ip::tcp::socket socket, SslPtr ssl, bool server);
  ~TlsStream() override;

  /// Runs the handshake to its end: `done(true)` once it completed, `done(false)` on failure
  /// (error() says why) or when the stream was closed meanwhile.
  void handshake(std::function<void(bool ok)> done);
  /// Why the handshake failed (the OpenSSL error queue, or the verify result).
  const std::string& error() const { return error_; }
  SSL* ssl() const { return ssl_.get(); }
  boost::asio::ip::tcp::socket& socket() { return socket_; }
  /// For a connection waiting for its first use (never blocks): false once the peer closed
  /// it, or sent application data, which a relay peer never does before our header. Reads
  /// what the peer's TLS sent meanwhile (its session ticket, filed by RelayTls).
  bool idle_alive();

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
  /// What OpenSSL needs before the call can go on.
  enum class Want { nothing, read, write };
  Result classify(int ret, Want& want);
  void wait_for(Want want, Wake wake);
  void handshake_step(std::shared_ptr<std::function<void(bool)>> done);

  boost::asio::ip::tcp::socket socket_;
  SslPtr ssl_;
  Want read_wants_ = Want::read;  ///< what the last read_some waited for
  bool drained_ = false;  ///< the last read_some ended in a would-block: nothing whole is buffered
  Want write_wants_ = Want::write;  ///< ... the last write_some
  bool shutdown_sent_ = false;
  int detached_fd_ = -1;
  boost::asio::ip::tcp protocol_ = boost::asio::ip::tcp::v4();
  std::string error_;
};

/// The TlsStream a FramedStream gives back to its Reuse: the relay frames only TlsStreams.
inline std::unique_ptr<TlsStream> as_tls(std::unique_ptr<tunnel::PublicStream> s) {
  return std::unique_ptr<TlsStream>(static_cast<TlsStream*>(s.release()));
}

}  // namespace gw::cluster

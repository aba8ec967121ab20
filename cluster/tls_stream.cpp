#include "cluster/tls_stream.hpp"

#include <openssl/err.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include "common/tls_alert.hpp"

namespace gw::cluster {
namespace {

/// read_some stops once less than this is left in the caller's buffer: a record's worth (a
/// smaller tail would only split the next record).
constexpr std::size_t kMinReadRoom = 16 * 1024;

std::string drain_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out;
}

}  // namespace

TlsStream::TlsStream(boost::asio::ip::tcp::socket socket, SslPtr ssl, bool server)
    : socket_(std::move(socket)), ssl_(std::move(ssl)) {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  const auto local = socket_.local_endpoint(ec);
  if (!ec) {
    protocol_ = local.protocol();
  }
  // A socket BIO on the descriptor, BIO_NOCLOSE: the Asio socket keeps owning it.
  SSL_set_fd(ssl_.get(), socket_.native_handle());
  if (server) {
    SSL_set_accept_state(ssl_.get());
  } else {
    SSL_set_connect_state(ssl_.get());
  }
}

TlsStream::~TlsStream() { close(); }

tunnel::PublicStream::Result TlsStream::classify(int ret, Want& want) {
  const int e = SSL_get_error(ssl_.get(), ret);
  switch (e) {
    case SSL_ERROR_WANT_READ:
      want = Want::read;
      return {Io::would_block};
    case SSL_ERROR_WANT_WRITE:
      want = Want::write;
      return {Io::would_block};
    case SSL_ERROR_ZERO_RETURN:
      return {Io::eof};
    default:
      error_ = drain_errors();
      return {Io::error};
  }
}

void TlsStream::handshake(std::function<void(bool ok)> done) {
  handshake_step(std::make_shared<std::function<void(bool)>>(std::move(done)));
}

void TlsStream::handshake_step(std::shared_ptr<std::function<void(bool)>> done) {
  ERR_clear_error();
  const int ret = SSL_do_handshake(ssl_.get());
  if (ret == 1) {
    (*done)(true);
    return;
  }
  Want want = Want::nothing;
  const auto r = classify(ret, want);
  if (r.status != Io::would_block) {
    if (const long v = SSL_get_verify_result(ssl_.get()); v != X509_V_OK) {
      error_ = std::string("certificate: ") + X509_verify_cert_error_string(v) +
               (error_.empty() ? "" : " (" + error_ + ")");
    } else if (error_.empty()) {
      error_ = "the peer closed the connection during the handshake";
    }
    (*done)(false);
    return;
  }
  wait_for(want, [this, done](bool ready) {
    if (!ready) {
      (*done)(false);  // closed (its deadline): the owner knows why
      return;
    }
    handshake_step(done);
  });
}

tunnel::PublicStream::Result TlsStream::read_some(std::span<std::byte> into) {
  // SSL_read_ex answers one record (16 KiB at most) per call; the callers' buffers are larger
  // (the Bridge reads 64 KiB), so read on while records are already here: one channel write
  // and one pass through the pump per 64 KiB, not per record.
  std::size_t total = 0;
  while (total < into.size()) {
    std::size_t n = 0;
    ERR_clear_error();
    const int ret = SSL_read_ex(ssl_.get(), into.data() + total, into.size() - total, &n);
    if (ret != 1) {
      if (total == 0) {
        const auto r = classify(ret, read_wants_);
        drained_ = r.status == Io::would_block;
        return r;
      }
      // What we have goes now; an EOF or error is sticky in OpenSSL and comes with the next
      // call, a would-block leaves nothing behind (its want is recorded for wait_readable).
      Want want = Want::nothing;
      const auto r = classify(ret, want);
      if (r.status == Io::would_block) {
        read_wants_ = want;
        drained_ = true;
      }
      return {Io::ok, total};
    }
    read_wants_ = Want::read;
    total += n;
    if (kMinReadRoom > into.size() - total) {
      break;
    }
  }
  drained_ = false;  // stopped for room: whole records may still be buffered
  return {Io::ok, total};
}

tunnel::PublicStream::Result TlsStream::write_some(std::span<const std::byte> from) {
  if (from.empty()) {
    return {Io::ok, 0};
  }
  // With SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write_ex returns after each record (16 KiB): write
  // on while the socket takes them, so one call moves what the caller has (the Bridge would
  // otherwise keep the rest, move it to the front of its buffer and wait a loop turn for
  // "writable" per record: what held relayed bulk up at 0.62 of local).
  std::size_t total = 0;
  while (total < from.size()) {
    std::size_t n = 0;
    ERR_clear_error();
    const int ret = SSL_write_ex(ssl_.get(), from.data() + total, from.size() - total, &n);
    if (ret != 1) {
      if (total == 0) {
        return classify(ret, write_wants_);
      }
      // The caller retries from total on, so the record OpenSSL holds is retried with its bytes.
      Want want = Want::nothing;
      if (classify(ret, want).status == Io::would_block) {
        write_wants_ = want;
      }
      return {Io::ok, total};
    }
    write_wants_ = Want::write;
    total += n;
  }
  return {Io::ok, total};
}

bool TlsStream::idle_alive() {
  if (!socket_.is_open()) {
    return false;
  }
  std::byte b{};
  std::size_t n = 0;
  ERR_clear_error();
  const int ret = SSL_read_ex(ssl_.get(), &b, 1, &n);
  if (ret == 1) {
    return false;  // a byte before our header: not a state we know how to go on from
  }
  Want want = Want::nothing;
  const auto r = classify(ret, want);
  if (r.status == Io::would_block) {
    read_wants_ = want;
    return true;
  }
  return false;
}

void TlsStream::cancel_waits() {
  boost::system::error_code ec;
  socket_.cancel(ec);
}

void TlsStream::wait_for(Want want, Wake wake) {
  const auto kind = want == Want::write ? boost::asio::ip::tcp::socket::wait_write
                                        : boost::asio::ip::tcp::socket::wait_read;
  socket_.async_wait(kind,
                     [wake = std::move(wake)](const boost::system::error_code& ec) { wake(!ec); });
}

void TlsStream::wait_readable(Wake wake) {
  // After a read that OpenSSL ended wanting the socket, what it buffers (read-ahead) is part
  // of a record whose rest only the socket brings: waking at once would spin until it comes
  // (a lost segment: a retransmit timeout of busy loop).
  if (!drained_ && SSL_has_pending(ssl_.get()) == 1) {
    // Decrypted (or buffered) bytes are already here: the socket may never become readable.
    boost::asio::post(socket_.get_executor(), [wake = std::move(wake)] { wake(true); });
    return;
  }
  wait_for(read_wants_, std::move(wake));
}

void TlsStream::wait_writable(Wake wake) { wait_for(write_wants_, std::move(wake)); }

void TlsStream::shutdown_send() {
  if (!shutdown_sent_ && socket_.is_open()) {
    shutdown_sent_ = true;
    // close_notify: the peer reads EOF and may go on writing (TLS 1.3 half-close). Best
    // effort: a full socket buffer loses it, and the close that follows is EOF too.
    ERR_clear_error();
    SSL_shutdown(ssl_.get());
    ERR_clear_error();
  }
}

std::size_t TlsStream::alert_and_close(std::uint8_t description) {
  // The alert is the visitor's TLS, not ours: it travels as application data.
  const auto alert = gw::make_alert(description);
  const auto r = write_some(alert);
  shutdown_send();
  close();
  return r.status == Io::ok ? r.bytes : 0;
}

void TlsStream::close() {
  boost::system::error_code ec;
  socket_.close(ec);
  if (detached_fd_ >= 0) {
    ::close(detached_fd_);
    detached_fd_ = -1;
  }
}

bool TlsStream::detach() { return tunnel::release_descriptor(socket_, detached_fd_); }

bool TlsStream::attach(boost::asio::io_context& ioc) {
  // On failure the destructor closes detached_fd_.
  return tunnel::assign_descriptor(socket_, protocol_, detached_fd_, ioc);
}

}  // namespace gw::cluster

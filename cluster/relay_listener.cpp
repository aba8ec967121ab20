#include "cluster/relay_listener.hpp"

#include <boost/asio/steady_timer.hpp>

#include "cluster/registry_codec.hpp"
#include "cluster/tls_stream.hpp"
#include "common/printable.hpp"
#include "common/proxy_v2.hpp"
#include "tunnel/hostname.hpp"

namespace gw::cluster {
namespace {

/// Most bytes read before the header is complete: the header cap plus one TLS record of what
/// follows it (a read may return the start of the ClientHello with the header).
constexpr std::size_t kMaxHeaderRead = proxy::kMaxHeaderBytes + 16 * 1024 + 256;
constexpr std::size_t kReadChunk = 16 * 1024 + 256;

/// One relay connection from accept until it is handed to an endpoint or refused.
class Inbound : public std::enable_shared_from_this<Inbound> {
 public:
  Inbound(boost::asio::ip::tcp::socket socket, std::uint64_t id, SslPtr ssl,
          const RelayConfig& config, std::shared_ptr<tunnel::EndpointRegistry> registry,
          std::shared_ptr<RelayStats> stats, std::shared_ptr<spdlog::logger> log)
      : timer_(socket.get_executor()),
        id_(id),
        config_(config),
        registry_(std::move(registry)),
        stats_(std::move(stats)),
        log_(std::move(log)) {
    boost::system::error_code ec;
    peer_ = socket.remote_endpoint(ec);
    socket.set_option(boost::asio::ip::tcp::no_delay(true), ec);
    accepted_at_ = std::chrono::steady_clock::now();
    accepted_wall_ = std::chrono::system_clock::now();
    stream_ = std::make_unique<TlsStream>(std::move(socket), std::move(ssl), true);
    stats_->in_pending++;
  }
  ~Inbound() { stats_->in_pending--; }

  void start() {
    arm(config_.accept_timeout);
    stream_->handshake([self = shared_from_this()](bool ok) { self->on_handshake(ok); });
  }

 private:
  /// The one deadline, from now (re-arming cancels the previous wait: its handler sees the
  /// cancellation and does nothing).
  void arm(std::chrono::milliseconds after) {
    timer_.expires_after(after);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec && !self->done_) {
        self->stats_->in_timeout++;
        self->refuse(self->handshaken_ ? "no PROXY header within spare_idle + the accept timeout"
                                       : "no TLS handshake within the accept timeout");
      }
    });
  }

  void on_handshake(bool ok) {
    if (done_) {
      return;
    }
    if (!ok) {
      stats_->in_certificate++;
      refuse("TLS handshake failed (" + stream_->error() +
             "): peers need a certificate of --cluster-ca");
      return;
    }
    handshaken_ = true;
    peer_node_ = RelayTls::peer_node_id(stream_->ssl()).value_or("?");
    // A verified peer may hold this connection as a warm spare (relay_dialer.hpp): it sends the
    // header when a visitor comes, and closes the spare itself after spare_idle.
    arm(config_.spare_idle + config_.accept_timeout);
    read_header();
  }

  void read_header() {
    for (;;) {
      const std::size_t old = buffer_.size();
      buffer_.resize(old + std::min(kReadChunk, kMaxHeaderRead - old));
      const auto r = stream_->read_some(std::span(buffer_).subspan(old));
      buffer_.resize(old + (r.status == tunnel::PublicStream::Io::ok ? r.bytes : 0));
      if (r.status == tunnel::PublicStream::Io::would_block) {
        stream_->wait_readable([self = shared_from_this()](bool ready) {
          if (ready && !self->done_) {
            self->read_header();
          }
        });
        return;
      }
      if (r.status != tunnel::PublicStream::Io::ok) {
        stats_->in_bad_header++;
        refuse("closed before a complete PROXY header");
        return;
      }
      const auto p = proxy::parse(buffer_);
      if (p.status == proxy::Status::need_more && buffer_.size() < kMaxHeaderRead) {
        continue;
      }
      if (p.status != proxy::Status::complete) {
        stats_->in_bad_header++;
        refuse(p.status == proxy::Status::invalid ? p.error.message() : "PROXY header too long");
        return;
      }
      route(p);
      return;
    }
  }

  void route(const proxy::ParseResult& p) {
    const auto& h = p.header;
    std::optional<tunnel::Hostname> name;
    if (h.authority) {
      if (auto n = tunnel::Hostname::parse(*h.authority, false)) {
        name = *n;
      }
    }
    if (!h.proxied || !h.source || !name || !h.route) {
      stats_->in_bad_header++;
      refuse(
          "the PROXY header lacks the visitor's address, a valid authority (SNI) or the route "
          "TLV: is the peer a snigate node of this version?");
      return;
    }
    sni_ = name->str();
    const auto session = session_number(h.route->session_id);
    // With the teammate TLV: a teammate's ssh -L / -W on the ingress node, for an internal
    // endpoint; without it, a public visitor.
    const bool internal = h.teammate.has_value();
    auto endpoint = session ? registry_->find_held_by(sni_, *session, internal) : nullptr;
    if (!endpoint) {
      stats_->in_stale++;
      log_->info("relay.stale conn=t{} from={} sni={} session={} revision={}", id_, peer_node_,
                 sni_, printable(h.route->session_id, 64), h.route->revision);
      answer(Status::stale);
      done_ = true;
      timer_.cancel();
      stream_->shutdown_send();
      stream_->close();
      return;
    }
    if (!answer(Status::ok)) {
      stats_->in_bad_header++;
      refuse("the peer's connection failed before the status byte");
      return;
    }
    done_ = true;
    timer_.cancel();
    stats_->relayed_in++;
    log_->debug("relay.accept conn=t{} from={} ingress_conn={} client={} sni={} s={}", id_,
                peer_node_, h.unique_id ? printable(*h.unique_id, 128) : "-",
                h.source->address().to_string(), sni_, *session);
    std::vector<std::byte> peeked(buffer_.begin() + static_cast<std::ptrdiff_t>(p.consumed),
                                  buffer_.end());
    std::vector<std::byte>().swap(buffer_);
    auto& ioc = static_cast<boost::asio::io_context&>(stream_->executor().context());
    endpoint->deliver(tunnel::IncomingConnection{
        boost::asio::generic::stream_protocol::socket(ioc), std::move(peeked), sni_, *h.source, id_,
        accepted_at_, accepted_wall_, std::move(stream_), peer_node_, internal,
        internal ? h.teammate->session_id : 0, internal ? h.teammate->key_fingerprint : ""});
  }

  /// The status byte. The first write after a handshake always fits in the socket buffer.
  bool answer(Status status) {
    const std::byte b{static_cast<std::uint8_t>(status)};
    return stream_->write_some(std::span(&b, 1)).status == tunnel::PublicStream::Io::ok;
  }

  void refuse(const std::string& why) {
    if (done_) {
      return;
    }
    done_ = true;
    timer_.cancel();
    log_->warn("relay.refuse conn=t{} peer={} node={} sni={} reason=\"{}\"", id_,
               peer_.address().to_string(), peer_node_, sni_.empty() ? "-" : sni_, why);
    stream_->close();
  }

  std::unique_ptr<TlsStream> stream_;
  boost::asio::steady_timer timer_;
  std::uint64_t id_;
  RelayConfig config_;
  std::shared_ptr<tunnel::EndpointRegistry> registry_;
  std::shared_ptr<RelayStats> stats_;
  std::shared_ptr<spdlog::logger> log_;
  boost::asio::ip::tcp::endpoint peer_;
  std::string peer_node_ = "-";
  std::string sni_;
  std::vector<std::byte> buffer_;
  std::chrono::steady_clock::time_point accepted_at_;
  std::chrono::system_clock::time_point accepted_wall_;
  bool handshaken_ = false;
  bool done_ = false;
};

}  // namespace

RelayListener::RelayListener(std::shared_ptr<RelayTls> tls, RelayConfig config,
                             std::shared_ptr<tunnel::EndpointRegistry> registry,
                             std::shared_ptr<RelayStats> stats, std::shared_ptr<spdlog::logger> log)
    : tls_(std::move(tls)),
      config_(std::move(config)),
      registry_(std::move(registry)),
      stats_(std::move(stats)),
      log_(std::move(log)) {}

boost::asio::ip::tcp::endpoint RelayListener::listen(
    const std::vector<boost::asio::io_context*>& contexts,
    const boost::asio::ip::tcp::endpoint& where) {
  return acceptors_.listen(
      contexts, where,
      [this](boost::asio::io_context&, boost::asio::ip::tcp::socket socket) {
        on_accept(std::move(socket));
      },
      [this](const boost::system::error_code& ec) {
        log_->error("relay.accept_failed error=\"{}\"", ec.message());
      });
}

void RelayListener::on_accept(boost::asio::ip::tcp::socket socket) {
  if (stats_->in_pending.load() >= config_.max_pending) {
    // Before any TLS work: a flood of handshakes is the cheapest thing to refuse.
    stats_->in_overloaded++;
    boost::system::error_code ec;
    socket.close(ec);
    return;
  }
  SslPtr ssl(SSL_new(tls_->server()));
  if (!ssl) {
    log_->error("relay.accept_failed error=\"SSL_new failed (out of memory?)\"");
    boost::system::error_code ec;
    socket.close(ec);
    return;
  }
  std::make_shared<Inbound>(std::move(socket), next_id_++, std::move(ssl), config_, registry_,
                            stats_, log_)
      ->start();
}

}  // namespace gw::cluster

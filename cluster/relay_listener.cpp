#include "cluster/relay_listener.hpp"

#include <boost/asio/steady_timer.hpp>

#include "cluster/framed_stream.hpp"
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

}  // namespace

/// What every relay connection of one listener shares (and a kept connection's next Inbound
/// needs after the listener's own call returned).
struct RelayListener::Shared {
  RelayConfig config;
  std::shared_ptr<tunnel::EndpointRegistry> registry;
  std::shared_ptr<RelayStats> stats;
  std::shared_ptr<spdlog::logger> log;
  std::atomic<std::uint64_t> next_id{kRelayConnIdBase};
};

namespace {

/// One relay connection from accept (or from the end of its previous visitor, protocol 2) until
/// it is handed to an endpoint or refused.
class Inbound : public std::enable_shared_from_this<Inbound> {
 public:
  using Shared = RelayListener::Shared;

  /// A connection just accepted: start() runs the handshake.
  Inbound(boost::asio::ip::tcp::socket socket, SslPtr ssl, std::shared_ptr<Shared> shared)
      : timer_(socket.get_executor()), id_(shared->next_id++), shared_(std::move(shared)) {
    boost::system::error_code ec;
    peer_ = socket.remote_endpoint(ec);
    socket.set_option(boost::asio::ip::tcp::no_delay(true), ec);
    stream_ = std::make_unique<TlsStream>(std::move(socket), std::move(ssl), true);
    shared_->stats->in_pending++;
  }
  /// A protocol 2 connection whose visitor ended cleanly: keep() waits for the next header.
  Inbound(std::unique_ptr<TlsStream> stream, std::shared_ptr<Shared> shared,
          boost::asio::ip::tcp::endpoint peer, std::string peer_node)
      : stream_(std::move(stream)),
        timer_(stream_->executor()),
        id_(shared->next_id++),
        shared_(std::move(shared)),
        peer_(std::move(peer)),
        peer_node_(std::move(peer_node)),
        handshaken_(true) {
    shared_->stats->in_pending++;
  }
  ~Inbound() { shared_->stats->in_pending--; }

  void start() {
    arm(shared_->config.accept_timeout);
    stream_->handshake([self = shared_from_this()](bool ok) { self->on_handshake(ok); });
  }

  void keep() {
    shared_->stats->in_kept++;
    // The dialer keeps it as a spare for spare_idle, as a fresh one (relay_dialer.hpp).
    arm(shared_->config.spare_idle + shared_->config.accept_timeout);
    read_header();
  }

 private:
  const RelayConfig& config() const { return shared_->config; }
  RelayStats& stats() { return *shared_->stats; }
  spdlog::logger& log() { return *shared_->log; }

  /// The one deadline, from now (re-arming cancels the previous wait: its handler sees the
  /// cancellation and does nothing).
  void arm(std::chrono::milliseconds after) {
    timer_.expires_after(after);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec && !self->done_) {
        self->stats().in_timeout++;
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
      stats().in_certificate++;
      refuse("TLS handshake failed (" + stream_->error() +
             "): peers need a certificate of --cluster-ca");
      return;
    }
    handshaken_ = true;
    peer_node_ = RelayTls::peer_node_id(stream_->ssl()).value_or("?");
    // A verified peer may hold this connection as a warm spare (relay_dialer.hpp): it sends the
    // header when a visitor comes, and closes the spare itself after spare_idle.
    arm(config().spare_idle + config().accept_timeout);
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
        if (buffer_.empty() && handshaken_) {
          // The dialer let a spare (or a kept connection) go unused: its normal end.
          settle();
          log().debug("relay.unused conn=t{} node={}", id_, peer_node_);
          stream_->close();
          return;
        }
        stats().in_bad_header++;
        refuse("closed before a complete PROXY header");
        return;
      }
      const auto p = proxy::parse(buffer_);
      if (p.status == proxy::Status::need_more && buffer_.size() < kMaxHeaderRead) {
        continue;
      }
      if (p.status != proxy::Status::complete) {
        stats().in_bad_header++;
        refuse(p.status == proxy::Status::invalid ? p.error.message() : "PROXY header too long");
        return;
      }
      route(p);
      return;
    }
  }

  void route(const proxy::ParseResult& p) {
    // The visitor reached this node now (a spare or a kept connection may have waited long).
    const auto arrived_at = std::chrono::steady_clock::now();
    const auto arrived_wall = std::chrono::system_clock::now();
    const auto& h = p.header;
    std::optional<tunnel::Hostname> name;
    if (h.authority) {
      if (auto n = tunnel::Hostname::parse(*h.authority, false)) {
        name = *n;
      }
    }
    if (!h.proxied || !h.source || !name || !h.route) {
      stats().in_bad_header++;
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
    auto endpoint = session ? shared_->registry->find_held_by(sni_, *session, internal) : nullptr;
    if (!endpoint) {
      stats().in_stale++;
      log().info("relay.stale conn=t{} from={} sni={} session={} revision={}", id_, peer_node_,
                 sni_, printable(h.route->session_id, 64), h.route->revision);
      answer(Status::stale);
      settle();
      stream_->shutdown_send();
      stream_->close();
      return;
    }
    if (!answer(Status::ok)) {
      stats().in_bad_header++;
      refuse("the peer's connection failed before the status byte");
      return;
    }
    settle();
    stats().relayed_in++;
    // Relay protocol 2 (chosen by ALPN in the handshake, so the same for every visitor here).
    const bool framed = RelayTls::framed(stream_->ssl());
    log().debug("relay.accept conn=t{} from={} ingress_conn={} client={} sni={} s={} framed={}",
                id_, peer_node_, h.unique_id ? printable(*h.unique_id, 128) : "-",
                h.source->address().to_string(), sni_, *session, framed);
    std::vector<std::byte> after(buffer_.begin() + static_cast<std::ptrdiff_t>(p.consumed),
                                 buffer_.end());
    std::vector<std::byte>().swap(buffer_);
    auto& ioc = static_cast<boost::asio::io_context&>(stream_->executor().context());
    std::unique_ptr<tunnel::PublicStream> stream;
    std::vector<std::byte> peeked;
    if (framed) {
      // The visitor's bytes come framed; after its clean end the connection waits
      // here for the next header, on whatever thread the visitor's session ran.
      auto framed = std::make_unique<FramedStream>(
          std::move(stream_),
          [shared = shared_, peer = peer_,
           node = peer_node_](std::unique_ptr<tunnel::PublicStream> s) {
            std::make_shared<Inbound>(as_tls(std::move(s)), shared, peer, node)->keep();
          },
          std::move(after));
      peeked = framed->take_prefix_payload();
      stream = std::move(framed);
    } else {
      peeked = std::move(after);
      stream = std::move(stream_);
    }
    endpoint->deliver(tunnel::IncomingConnection{
        boost::asio::generic::stream_protocol::socket(ioc), std::move(peeked), sni_, *h.source, id_,
        arrived_at, arrived_wall, std::move(stream), peer_node_, internal,
        internal ? h.teammate->session_id : 0, internal ? h.teammate->key_fingerprint : ""});
  }

  /// The connection is decided (handed on, answered or refused): the deadline no longer applies.
  void settle() {
    done_ = true;
    timer_.cancel();
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
    settle();
    log().warn("relay.refuse conn=t{} peer={} node={} sni={} reason=\"{}\"", id_,
               peer_.address().to_string(), peer_node_, sni_.empty() ? "-" : sni_, why);
    stream_->close();
  }

  std::unique_ptr<TlsStream> stream_;
  boost::asio::steady_timer timer_;
  std::uint64_t id_;
  std::shared_ptr<Shared> shared_;
  boost::asio::ip::tcp::endpoint peer_;
  std::string peer_node_ = "-";
  std::string sni_;
  std::vector<std::byte> buffer_;
  bool handshaken_ = false;
  bool done_ = false;
};

}  // namespace

RelayListener::RelayListener(std::shared_ptr<RelayTls> tls, RelayConfig config,
                             std::shared_ptr<tunnel::EndpointRegistry> registry,
                             std::shared_ptr<RelayStats> stats, std::shared_ptr<spdlog::logger> log)
    : tls_(std::move(tls)), shared_(std::make_shared<Shared>()) {
  shared_->config = std::move(config);
  shared_->registry = std::move(registry);
  shared_->stats = std::move(stats);
  shared_->log = std::move(log);
}

RelayListener::~RelayListener() = default;

const RelayStats& RelayListener::stats() const { return *shared_->stats; }

boost::asio::ip::tcp::endpoint RelayListener::listen(
    const std::vector<boost::asio::io_context*>& contexts,
    const boost::asio::ip::tcp::endpoint& where) {
  return acceptors_.listen(
      contexts, where,
      [this](boost::asio::io_context&, boost::asio::ip::tcp::socket socket) {
        on_accept(std::move(socket));
      },
      [this](const boost::system::error_code& ec) {
        shared_->log->error("relay.accept_failed error=\"{}\"", ec.message());
      });
}

void RelayListener::on_accept(boost::asio::ip::tcp::socket socket) {
  if (shared_->stats->in_pending.load() >= shared_->config.max_pending) {
    // Before any TLS work: a flood of handshakes is the cheapest thing to refuse.
    shared_->stats->in_overloaded++;
    boost::system::error_code ec;
    socket.close(ec);
    return;
  }
  SslPtr ssl(SSL_new(tls_->server()));
  if (!ssl) {
    shared_->log->error("relay.accept_failed error=\"SSL_new failed (out of memory?)\"");
    boost::system::error_code ec;
    socket.close(ec);
    return;
  }
  std::make_shared<Inbound>(std::move(socket), std::move(ssl), shared_)->start();
}

}  // namespace gw::cluster

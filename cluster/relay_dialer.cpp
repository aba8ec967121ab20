#include "cluster/relay_dialer.hpp"

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cluster/relay_listener.hpp"
#include "cluster/tls_stream.hpp"
#include "common/printable.hpp"
#include "common/proxy_v2.hpp"
#include "common/tls_alert.hpp"

namespace gw::cluster {

/// One I/O thread's relayed bridges: their owner (as a session owns its bridges), and a 1 s
/// timer that checks their deadlines (idle each way) and drops the finished ones. Touched on its
/// thread only.
class DeadlineSweep : public std::enable_shared_from_this<DeadlineSweep> {
 public:
  explicit DeadlineSweep(boost::asio::io_context& ioc) : timer_(ioc) {}
  void add(std::shared_ptr<tunnel::Bridge> bridge) {
    bridges_.push_back(std::move(bridge));
    if (!armed_) {
      arm();
    }
  }
  void stop() { timer_.cancel(); }

 private:
  void arm() {
    armed_ = true;
    timer_.expires_after(std::chrono::seconds(1));
    timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      auto self = weak.lock();
      if (ec || !self) {
        return;
      }
      self->armed_ = false;
      const auto now = std::chrono::steady_clock::now();
      // Finished bridges leave at the next tick, never from inside their own call stack.
      std::erase_if(self->bridges_, [&](const std::shared_ptr<tunnel::Bridge>& b) {
        if (b->finished()) {
          return true;
        }
        b->check_deadlines(now);
        return false;
      });
      if (!self->bridges_.empty()) {
        self->arm();
      }
    });
  }

  boost::asio::steady_timer timer_;
  std::vector<std::shared_ptr<tunnel::Bridge>> bridges_;
  bool armed_ = false;
};

namespace {

constexpr std::size_t kChunk = 64 * 1024;
/// Most bytes moved down per wake-up, so one busy relay can't starve others on this thread.
constexpr std::size_t kDownBudget = 512 * 1024;

std::byte* scratch() {
  thread_local std::array<std::byte, kChunk> buffer;
  return buffer.data();
}

/// The relay's TLS stream as the Bridge's channel: "open" the moment the status said ok (the
/// dialer made it before); data from the owner goes to the handler, what it doesn't take waits
/// here until resume_reading() (and nothing more is read meanwhile: back-pressure to the owner).
class RelayChannel final : public tunnel::Channel,
                           public std::enable_shared_from_this<RelayChannel> {
 public:
  explicit RelayChannel(std::unique_ptr<TlsStream> stream) : stream_(std::move(stream)) {}

  void start(tunnel::ChannelHandler& handler) override {
    handler_ = &handler;
    boost::asio::post(stream_->executor(), [self = shared_from_this()] {
      if (self->closed_) {
        return;
      }
      self->handler_->on_channel_opened();
      self->pull();  // the owner's first bytes may already be decrypted in the stream
    });
  }

  std::optional<std::size_t> write(std::span<const std::byte> data) override {
    const auto r = stream_->write_some(data);
    if (r.status == tunnel::PublicStream::Io::ok) {
      return r.bytes;
    }
    if (r.status == tunnel::PublicStream::Io::would_block) {
      blocked_ = true;
      return 0;
    }
    return std::nullopt;
  }

  bool blocked() const override { return blocked_; }

  void want_writable() override {
    if (write_waiting_ || closed_) {
      return;
    }
    write_waiting_ = true;
    stream_->wait_writable([self = shared_from_this()](bool ready) {
      self->write_waiting_ = false;
      if (!ready || self->closed_) {
        return;
      }
      self->blocked_ = false;
      self->handler_->on_channel_writable();
    });
  }

  void resume_reading() override {
    paused_ = false;
    if (!held_.empty()) {
      const std::size_t n = handler_->on_channel_data(held_);
      held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(n));
      if (!held_.empty()) {
        paused_ = true;
        return;
      }
      std::vector<std::byte>().swap(held_);
    }
    if (!read_waiting_) {
      boost::asio::post(stream_->executor(), [self = shared_from_this()] { self->pull(); });
    }
  }

  bool send_eof() override {
    stream_->shutdown_send();
    return true;
  }

  void close() override {
    closed_ = true;
    stream_->close();
  }

 private:
  void pull() {
    std::size_t moved = 0;
    while (!closed_ && !paused_ && moved < kDownBudget) {
      const auto r = stream_->read_some(std::span<std::byte>(scratch(), kChunk));
      if (r.status == tunnel::PublicStream::Io::would_block) {
        read_waiting_ = true;
        stream_->wait_readable([self = shared_from_this()](bool ready) {
          self->read_waiting_ = false;
          if (ready && !self->closed_) {
            self->pull();
          }
        });
        return;
      }
      if (r.status == tunnel::PublicStream::Io::eof) {
        handler_->on_channel_eof();
        return;
      }
      if (r.status != tunnel::PublicStream::Io::ok) {
        handler_->on_channel_closed();  // the owner's side reset: nothing more can go there
        return;
      }
      const std::size_t n = handler_->on_channel_data(std::span(scratch(), r.bytes));
      if (n < r.bytes) {
        held_.assign(scratch() + n, scratch() + r.bytes);
        paused_ = true;
        return;
      }
      moved += r.bytes;
    }
    if (!closed_ && !paused_) {
      boost::asio::post(stream_->executor(), [self = shared_from_this()] { self->pull(); });
    }
  }

  std::unique_ptr<TlsStream> stream_;
  tunnel::ChannelHandler* handler_ = nullptr;
  std::vector<std::byte> held_;  ///< from the owner, not yet taken by the bridge
  bool blocked_ = false;
  bool paused_ = false;
  bool read_waiting_ = false;
  bool write_waiting_ = false;
  bool closed_ = false;
};

std::string unique_id(const std::string& node, std::uint64_t conn) {
  return node + "/t" + std::to_string(conn);
}

}  // namespace

/// One attempt to relay one visitor: connect, handshake, header, status.
class Outbound : public std::enable_shared_from_this<Outbound> {
 public:
  Outbound(std::shared_ptr<RelayDialer> dialer, tunnel::IncomingConnection conn,
           tunnel::RemoteRoute route, int attempt)
      : dialer_(std::move(dialer)),
        conn_(std::move(conn)),
        route_(std::move(route)),
        attempt_(attempt),
        socket_(conn_.socket.get_executor()),
        timer_(conn_.socket.get_executor()),
        key_(route_.node_id + "@" + route_.relay) {}

  void start() {
    const auto& c = dialer_->config_;
    if (dialer_->quarantined(route_.node_id)) {
      dialer_->stats_->out_quarantined++;
      fail("quarantined", gw::kAlertInternalError, "the peer failed less than 5 s ago");
      return;
    }
    boost::system::error_code ec;
    const auto colon = route_.relay.rfind(':');
    auto host = route_.relay.substr(0, colon == std::string::npos ? 0 : colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    const auto address = boost::asio::ip::make_address(host, ec);
    unsigned port = 0;
    if (colon != std::string::npos) {
      port = static_cast<unsigned>(std::strtoul(route_.relay.c_str() + colon + 1, nullptr, 10));
    }
    if (ec || port == 0 || port > 65535) {
      dialer_->stats_->out_unreachable++;
      fail("unreachable", gw::kAlertInternalError,
           "relay address is not IP:PORT (--relay-advertise must be numeric)");
      return;
    }
    arm(c.connect_timeout);
    socket_.async_connect(
        boost::asio::ip::tcp::endpoint(address, static_cast<std::uint16_t>(port)),
        [self = shared_from_this()](const boost::system::error_code& e) { self->on_connect(e); });
  }

 private:
  void arm(std::chrono::milliseconds after) {
    timer_.expires_after(after);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
      if (e || self->done_) {
        return;
      }
      self->timed_out_ = true;
      boost::system::error_code ignored;
      self->socket_.close(ignored);
      if (self->stream_) {
        self->stream_->close();
      }
    });
  }

  void on_connect(const boost::system::error_code& ec) {
    if (done_) {
      return;
    }
    if (ec) {
      unreachable(timed_out_ ? "connect timed out" : ec.message());
      return;
    }
    boost::system::error_code ignored;
    socket_.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
    auto ssl = dialer_->tls_->client_for(route_.node_id, &key_);
    if (!ssl) {
      unreachable("no TLS context");
      return;
    }
    stream_ = std::make_unique<TlsStream>(std::move(socket_), std::move(ssl), false);
    arm(dialer_->config_.handshake_timeout);
    stream_->handshake([self = shared_from_this()](bool ok) { self->on_handshake(ok); });
  }

  void on_handshake(bool ok) {
    if (done_) {
      return;
    }
    if (!ok) {
      // A stopped process's backlog completes TCP handshakes: no TLS is the liveness signal.
      dialer_->stats_->out_handshake++;
      dialer_->quarantine(route_.node_id);
      fail("handshake", gw::kAlertInternalError,
           timed_out_ ? "TLS handshake timed out" : "TLS handshake failed: " + stream_->error());
      return;
    }
    proxy::Header h;
    h.source = conn_.client;
    h.destination = conn_.local_tcp_endpoint().value_or(
        boost::asio::ip::tcp::endpoint(conn_.client.address(), 0));
    h.authority = conn_.server_name;
    h.unique_id = unique_id(dialer_->tls_->node_id(), conn_.id);
    h.route = proxy::RouteTlv{route_.session_id, route_.revision};
    if (conn_.internal) {
      h.teammate = proxy::TeammateTlv{conn_.client_session_id, conn_.client_key_fingerprint};
    }
    auto header = proxy::build(h);
    if (!header) {
      dialer_->stats_->out_protocol++;
      fail("protocol", gw::kAlertInternalError,
           "route cannot be sent: " + header.error().message());
      return;
    }
    // Header and ClientHello in one write, without waiting for the status: one round trip.
    out_ = std::move(*header);
    out_.insert(out_.end(), conn_.peeked.begin(), conn_.peeked.end());
    write_out();
  }

  void write_out() {
    while (sent_ < out_.size()) {
      const auto r = stream_->write_some(std::span(out_).subspan(sent_));
      if (r.status == tunnel::PublicStream::Io::would_block) {
        stream_->wait_writable([self = shared_from_this()](bool ready) {
          if (ready && !self->done_) {
            self->write_out();
          } else {
            self->lost("closed while sending the header");
          }
        });
        return;
      }
      if (r.status != tunnel::PublicStream::Io::ok) {
        lost("write failed");
        return;
      }
      sent_ += r.bytes;
    }
    std::vector<std::byte>().swap(out_);
    read_status();
  }

  void read_status() {
    if (done_) {
      return;
    }
    std::byte status{};
    const auto r = stream_->read_some(std::span(&status, 1));
    if (r.status == tunnel::PublicStream::Io::would_block) {
      stream_->wait_readable([self = shared_from_this()](bool ready) {
        if (ready) {
          self->read_status();
        } else {
          self->lost("closed before the status");
        }
      });
      return;
    }
    if (r.status != tunnel::PublicStream::Io::ok) {
      lost("the peer closed before answering (it refused the header: see its relay.refuse)");
      return;
    }
    on_status(std::to_integer<std::uint8_t>(status));
  }

  void on_status(std::uint8_t status) {
    done_ = true;
    timer_.cancel();
    auto& stats = *dialer_->stats_;
    switch (static_cast<Status>(status)) {
      case Status::ok:
        splice();
        return;
      case Status::stale:
        stream_->close();
        log().info("relay.stale conn=t{} sni={} node={} session={} attempt={}", conn_.id,
                   conn_.server_name, route_.node_id, printable(route_.session_id, 64), attempt_);
        dialer_->retry_or_refuse(std::move(conn_), attempt_);
        return;
      case Status::overloaded:
        stats.out_overloaded++;
        break;
      case Status::denied:
        stats.out_denied++;
        stream_->close();
        conn_.close();  // as a local CIDR refusal: no answer
        log().info("relay.denied conn=t{} sni={} node={}", conn_.id, conn_.server_name,
                   route_.node_id);
        return;
      default:
        stats.out_protocol++;
        break;
    }
    done_ = false;
    fail(status == 2 ? "overloaded" : "protocol", gw::kAlertInternalError,
         "the owner answered status " + std::to_string(status));
  }

  void splice() {
    auto& stats = *dialer_->stats_;
    stats.relayed_out++;
    const bool resumed = SSL_session_reused(stream_->ssl()) == 1;
    if (resumed) {
      stats.resumed++;
    }
    // The ClientHello went with the header; the bridge counts only what flows from here on.
    stats.out_bridges->bytes_in.fetch_add(conn_.peeked.size(), std::memory_order_relaxed);
    log().debug("relay.out conn=t{} sni={} node={} relay={} resumed={}", conn_.id,
                conn_.server_name, route_.node_id, route_.relay, resumed);
    auto* sweep = dialer_->sweep_for(conn_.socket.get_executor());
    if (sweep == nullptr) {
      log().error(
          "relay.bug conn=t{} reason=\"relay() ran on an io_context the RelayDialer was "
          "not given\"",
          conn_.id);
      conn_.alert_and_close(gw::kAlertInternalError);
      return;
    }
    auto channel = std::make_shared<RelayChannel>(std::move(stream_));
    const tunnel::ConnectionStart start = conn_.start();
    auto bridge = std::make_shared<tunnel::Bridge>(
        conn_.take_stream(), std::vector<std::byte>{}, start,
        tunnel::EndpointLabel{"", "", 0, "", route_.node_id}, std::move(channel), dialer_->bridge_,
        stats.out_bridges, dialer_->log_,
        [](const tunnel::ConnectionClosed&) {});  // the owner writes the connection's record
    sweep->add(bridge);
    bridge->start();
  }

  void unreachable(const std::string& why) {
    dialer_->stats_->out_unreachable++;
    dialer_->quarantine(route_.node_id);
    fail("unreachable", gw::kAlertInternalError, why);
  }

  /// The connection broke after the handshake (or the owner refused the header).
  void lost(const std::string& why) {
    if (done_) {
      return;
    }
    dialer_->stats_->out_protocol++;
    fail("protocol", gw::kAlertInternalError, timed_out_ ? "no status in time" : why);
  }

  void fail(const char* reason, std::uint8_t alert, const std::string& why) {
    if (done_) {
      return;
    }
    done_ = true;
    timer_.cancel();
    if (stream_) {
      stream_->close();
    }
    log().warn("relay.fail conn=t{} client={} sni={} node={} relay={} reason={} why=\"{}\"",
               conn_.id, conn_.client.address().to_string(), conn_.server_name, route_.node_id,
               route_.relay, reason, why);
    conn_.alert_and_close(alert);
  }

  spdlog::logger& log() { return *dialer_->log_; }

  std::shared_ptr<RelayDialer> dialer_;
  tunnel::IncomingConnection conn_;
  tunnel::RemoteRoute route_;
  int attempt_;
  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  std::string key_;  ///< the session cache's key for this peer; outlives the SSL
  std::unique_ptr<TlsStream> stream_;
  std::vector<std::byte> out_;
  std::size_t sent_ = 0;
  bool timed_out_ = false;
  bool done_ = false;
};

RelayDialer::RelayDialer(std::shared_ptr<RelayTls> tls, RelayConfig config,
                         std::shared_ptr<tunnel::ClusterRoutes> routes,
                         std::shared_ptr<tunnel::EndpointRegistry> local,
                         const std::vector<boost::asio::io_context*>& contexts,
                         tunnel::BridgeConfig bridge, std::shared_ptr<RelayStats> stats,
                         std::shared_ptr<spdlog::logger> log)
    : tls_(std::move(tls)),
      config_(std::move(config)),
      routes_(std::move(routes)),
      local_(std::move(local)),
      bridge_(bridge),
      stats_(std::move(stats)),
      log_(std::move(log)) {
  for (auto* ioc : contexts) {
    sweeps_.emplace(ioc, std::make_shared<DeadlineSweep>(*ioc));
  }
}

RelayDialer::~RelayDialer() = default;

DeadlineSweep* RelayDialer::sweep_for(const boost::asio::any_io_executor& ex) {
  auto* ioc = &static_cast<boost::asio::io_context&>(ex.context());
  const auto it = sweeps_.find(ioc);
  return it == sweeps_.end() ? nullptr : it->second.get();
}

void RelayDialer::relay(tunnel::IncomingConnection conn, tunnel::RemoteRoute route) {
  dial(std::move(conn), std::move(route), 1);
}

void RelayDialer::dial(tunnel::IncomingConnection conn, tunnel::RemoteRoute route, int attempt) {
  std::make_shared<Outbound>(shared_from_this(), std::move(conn), std::move(route), attempt)
      ->start();
}

void RelayDialer::retry_or_refuse(tunnel::IncomingConnection conn, int attempt) {
  if (attempt == 1) {
    stats_->retried++;
    // Only to an endpoint of the connection's own binding: a public visitor never reaches an
    // internal endpoint, a teammate's channel never a public one.
    auto again = routes_ ? routes_->find_remote(conn.server_name) : std::nullopt;
    if (again && again->internal == conn.internal) {
      dial(std::move(conn), std::move(*again), 2);
      return;
    }
    // No remote winner any more: the name may live here now (or nowhere).
    if (tunnel::Route here = local_ && !again ? local_->route(conn.server_name) : tunnel::Route{};
        here.endpoint && here.internal == conn.internal) {
      here.endpoint->deliver(std::move(conn));
      return;
    }
  }
  stats_->out_stale++;
  log_->warn("relay.fail conn=t{} client={} sni={} reason=stale why=\"{}\"", conn.id,
             conn.client.address().to_string(), conn.server_name,
             attempt == 1 ? "no route left for the name" : "stale twice");
  conn.alert_and_close(gw::kAlertUnrecognizedName);
}

bool RelayDialer::quarantined(const std::string& node_id) const {
  std::lock_guard lock(mutex_);
  const auto it = quarantine_.find(node_id);
  return it != quarantine_.end() && std::chrono::steady_clock::now() < it->second;
}

void RelayDialer::quarantine(const std::string& node_id) {
  std::lock_guard lock(mutex_);
  // Bounded by the cluster's nodes; expired entries are overwritten, not collected.
  quarantine_[node_id] = std::chrono::steady_clock::now() + config_.quarantine;
}

}  // namespace gw::cluster

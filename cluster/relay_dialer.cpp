#include "cluster/relay_dialer.hpp"

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <functional>

#include "cluster/framed_stream.hpp"
#include "cluster/relay_listener.hpp"
#include "cluster/tls_stream.hpp"
#include "common/printable.hpp"
#include "common/proxy_v2.hpp"
#include "common/tls_alert.hpp"

namespace gw::cluster {

/// The once-a-second sweep of the per-thread owners below: while its owner lives, calls
/// owner->on_tick(), which answers whether to go on; start() arms it unless it already is.
/// A member of its owner (so alive whenever the weak owner locks).
class SecondTicker {
 public:
  explicit SecondTicker(boost::asio::io_context& ioc) : timer_(ioc) {}
  template <class Owner>
  void start(const std::shared_ptr<Owner>& owner) {
    if (armed_) {
      return;
    }
    armed_ = true;
    timer_.expires_after(std::chrono::seconds(1));
    timer_.async_wait(
        [this, weak = std::weak_ptr<Owner>(owner)](const boost::system::error_code& ec) {
          auto self = weak.lock();
          if (ec || !self) {
            return;
          }
          armed_ = false;
          if (self->on_tick()) {
            start(self);
          }
        });
  }
  void stop() { timer_.cancel(); }

 private:
  boost::asio::steady_timer timer_;
  bool armed_ = false;
};

/// One I/O thread's relayed bridges: their owner (as a session owns its bridges), and a 1 s
/// timer that checks their deadlines (idle each way) and drops the finished ones. Touched on its
/// thread only.
class DeadlineSweep : public std::enable_shared_from_this<DeadlineSweep> {
 public:
  explicit DeadlineSweep(boost::asio::io_context& ioc) : ticker_(ioc) {}
  void add(std::shared_ptr<tunnel::Bridge> bridge) {
    bridges_.push_back(std::move(bridge));
    ticker_.start(shared_from_this());
  }
  void stop() { ticker_.stop(); }

  bool on_tick() {
    const auto now = std::chrono::steady_clock::now();
    // Finished bridges leave at the next tick, never from inside their own call stack.
    std::erase_if(bridges_, [&](const std::shared_ptr<tunnel::Bridge>& b) {
      if (b->finished()) {
        return true;
      }
      b->check_deadlines(now);
      return false;
    });
    return !bridges_.empty();
  }

 private:
  SecondTicker ticker_;
  std::vector<std::shared_ptr<tunnel::Bridge>> bridges_;
};

namespace {

constexpr std::size_t kChunk = 64 * 1024;
/// Most bytes moved down per wake-up, so one busy relay can't starve others on this thread.
constexpr std::size_t kDownBudget = 512 * 1024;

std::byte* scratch() {
  thread_local std::array<std::byte, kChunk> buffer;
  return buffer.data();
}

/// The relay's stream (TLS, framed in protocol 2) as the Bridge's channel: "open" the moment the
/// status said ok (the dialer made it before); data from the owner goes to the handler, what it
/// doesn't take waits here until resume_reading() (and nothing more is read meanwhile:
/// back-pressure to the owner).
class RelayChannel final : public tunnel::Channel,
                           public std::enable_shared_from_this<RelayChannel> {
 public:
  /// `on_close`: called once when the channel closes (the spare's refill).
  RelayChannel(std::unique_ptr<tunnel::PublicStream> stream, std::function<void()> on_close)
      : stream_(std::move(stream)), on_close_(std::move(on_close)) {}
  ~RelayChannel() override { closed(); }

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
    closed();
  }

 private:
  void closed() {
    if (on_close_) {
      auto f = std::move(on_close_);
      on_close_ = nullptr;
      f();
    }
  }

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

  std::unique_ptr<tunnel::PublicStream> stream_;
  std::function<void()> on_close_;
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

/// A relay address "IP:PORT" ("[v6]:PORT"); nullopt when it is not numeric.
std::optional<boost::asio::ip::tcp::endpoint> parse_relay(const std::string& relay) {
  boost::system::error_code ec;
  const auto colon = relay.rfind(':');
  if (colon == std::string::npos) {
    return std::nullopt;
  }
  auto host = relay.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const auto address = boost::asio::ip::make_address(host, ec);
  const unsigned long port = std::strtoul(relay.c_str() + colon + 1, nullptr, 10);
  if (ec || port == 0 || port > 65535) {
    return std::nullopt;
  }
  return boost::asio::ip::tcp::endpoint(address, static_cast<std::uint16_t>(port));
}

/// TCP connect and mutual TLS to one peer, each under its deadline: what a relay connection
/// is before any visitor's byte, for a visitor's own dial and for a warm spare alike.
class PeerDial : public std::enable_shared_from_this<PeerDial> {
 public:
  enum class Failure { none, address, unreachable, handshake };
  struct Result {
    std::unique_ptr<TlsStream> stream;  ///< handshaken, when failure is none
    Failure failure = Failure::none;
    std::string why;
  };
  using Done = std::function<void(Result)>;

  PeerDial(const boost::asio::any_io_executor& ex, std::shared_ptr<RelayTls> tls,
           const RelayConfig& config, std::string node_id, std::string relay, Done done)
      : tls_(std::move(tls)),
        connect_timeout_(config.connect_timeout),
        handshake_timeout_(config.handshake_timeout),
        node_id_(std::move(node_id)),
        relay_(std::move(relay)),
        done_(std::move(done)),
        socket_(ex),
        timer_(ex) {}

  void start() {
    const auto where = parse_relay(relay_);
    if (!where) {
      finish({nullptr, Failure::address,
              "relay address is not IP:PORT (--relay-advertise must be numeric)"});
      return;
    }
    arm(connect_timeout_);
    socket_.async_connect(*where, [self = shared_from_this()](const boost::system::error_code& e) {
      self->on_connect(e);
    });
  }

 private:
  void arm(std::chrono::milliseconds after) {
    timer_.expires_after(after);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
      if (e || self->finished_) {
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
    if (finished_) {
      return;
    }
    if (ec) {
      finish({nullptr, Failure::unreachable, timed_out_ ? "connect timed out" : ec.message()});
      return;
    }
    boost::system::error_code ignored;
    socket_.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
    auto ssl = tls_->client_for(node_id_, relay_);
    if (!ssl) {
      finish({nullptr, Failure::unreachable, "no TLS context"});
      return;
    }
    stream_ = std::make_unique<TlsStream>(std::move(socket_), std::move(ssl), false);
    arm(handshake_timeout_);
    stream_->handshake([self = shared_from_this()](bool ok) { self->on_handshake(ok); });
  }

  void on_handshake(bool ok) {
    if (finished_) {
      return;
    }
    if (!ok) {
      // A stopped process's backlog completes TCP handshakes: no TLS is the liveness signal.
      finish(
          {nullptr, Failure::handshake,
           timed_out_ ? "TLS handshake timed out" : "TLS handshake failed: " + stream_->error()});
      return;
    }
    finish({std::move(stream_), Failure::none, ""});
  }

  void finish(Result r) {
    if (finished_) {
      return;
    }
    finished_ = true;
    timer_.cancel();
    if (stream_) {
      stream_->close();
    }
    auto done = std::move(done_);
    done(std::move(r));
  }

  std::shared_ptr<RelayTls> tls_;
  std::chrono::milliseconds connect_timeout_;
  std::chrono::milliseconds handshake_timeout_;
  std::string node_id_;
  std::string relay_;
  Done done_;
  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  std::unique_ptr<TlsStream> stream_;
  bool timed_out_ = false;
  bool finished_ = false;
};

/// Warm spares per peer on one I/O thread (a relay stream lives on one thread, so each keeps
/// its own). Made lazily: a peer gets spares once a visitor was relayed to it, and loses them
/// when nobody was for kPoolUnusedFactor x spare_idle, or when it leaves the registry.
constexpr int kSparesPerPeer = 2;
/// Protocol 2: at most this many idle connections per peer on one thread, counting the ones
/// returned after their visitor (a burst of N visitors leaves N); more are closed.
constexpr std::size_t kMaxIdlePerPeer = 32;
/// ... x spare_idle without a visitor for the peer: its spares are closed, not replaced.
constexpr int kPoolUnusedFactor = 3;
/// A taken spare is replaced when its visitor's relay connection ends, or this long after it
/// was taken (see SpareShelf::take).
constexpr std::chrono::milliseconds kRefillDelay{20};

}  // namespace

/// One I/O thread's warm spare relay connections: per peer up to kSparesPerPeer TLS
/// connections already past their handshake, which a visitor takes instead of dialing (its
/// header and ClientHello go out at once: one round trip to the owner's status, not three).
/// Taking one posts the refill; a 1 s tick closes the ones that waited spare_idle or that the
/// peer closed (a restart), and replaces them while the peer is in use; a peer no longer in
/// the registry loses its spares at once. A refill that fails stops refilling until the next
/// visitor (no quarantine: no visitor waited; the visitor's own dial decides that).
/// Touched on its thread only.
class SpareShelf : public std::enable_shared_from_this<SpareShelf> {
 public:
  SpareShelf(boost::asio::io_context& ioc, std::shared_ptr<RelayTls> tls, const RelayConfig& config,
             std::shared_ptr<tunnel::ClusterRoutes> routes, std::shared_ptr<RelayStats> stats,
             std::shared_ptr<spdlog::logger> log)
      : ioc_(ioc),
        tls_(std::move(tls)),
        config_(config),
        routes_(std::move(routes)),
        stats_(std::move(stats)),
        log_(std::move(log)),
        ticker_(ioc) {}
  ~SpareShelf() {
    for (auto& [key, pool] : pools_) {
      stats_->spares_idle -= static_cast<std::int64_t>(pool.idle.size());
    }
  }

  struct Taken {
    std::unique_ptr<TlsStream> stream;  ///< null: none was there
    bool returned = false;              ///< it carried a visitor before (protocol 2)
  };
  /// A live spare to `route`'s peer, or none (the first visitor to a peer, or all taken): the
  /// caller dials. Either way the peer's spares are topped up after this call. The newest
  /// first: under a steady load the oldest age out after spare_idle instead of all staying.
  Taken take(const tunnel::RemoteRoute& route) {
    const std::string key = peer_key(route.node_id, route.relay);
    auto [it, added] = pools_.try_emplace(key);
    Pool& pool = it->second;
    if (added) {
      pool.node_id = route.node_id;
      pool.relay = route.relay;
      log_->debug("relay.spares_start node={} relay={} per_thread={}", route.node_id, route.relay,
                  kSparesPerPeer);
    }
    pool.last_used = std::chrono::steady_clock::now();
    pool.cooling = false;
    Taken out;
    while (!out.stream && !pool.idle.empty()) {
      auto spare = std::move(pool.idle.back());
      pool.idle.pop_back();
      stats_->spares_idle--;
      if (spare.stream->idle_alive()) {
        out = {std::move(spare.stream), spare.returned};
      } else {
        stats_->spare_dead++;
      }
    }
    if (!out.stream) {
      post_fill(key);  // the first visitor to this peer, or all taken: top up now
    } else {
      // The replacement's handshake costs both nodes CPU (resumed TLS 1.3: an X25519 exchange
      // and a new ticket); made while the visitor that took the spare is in its own first round
      // trips, it competes with them for the cores. So: when that visitor's relay connection
      // ends (refill(), from the caller), or kRefillDelay from now if it lives longer.
      auto timer = std::make_shared<boost::asio::steady_timer>(ioc_, kRefillDelay);
      timer->async_wait([weak = weak_from_this(), key, timer](const boost::system::error_code&) {
        if (auto self = weak.lock()) {
          self->fill(key);
        }
      });
    }
    ticker_.start(shared_from_this());
    return out;
  }

  /// Protocol 2, on the shelf's thread: a connection whose visitor ended cleanly, idle again.
  void give_back(const std::string& key, std::unique_ptr<TlsStream> stream) {
    const auto it = pools_.find(key);
    if (it == pools_.end() || it->second.idle.size() >= kMaxIdlePerPeer) {
      stats_->spare_surplus++;
      stream->close();  // the owner's header wait sees it go unused
      return;
    }
    it->second.idle.push_back({std::move(stream), std::chrono::steady_clock::now(), true});
    stats_->spares_idle++;
    stats_->spare_returned++;
  }

  /// Thread-safe: tops up the spares of the peer `key` (node@relay) on the shelf's thread.
  void post_fill(std::string key) {
    boost::asio::post(ioc_, [weak = weak_from_this(), key = std::move(key)] {
      if (auto self = weak.lock()) {
        self->fill(key);
      }
    });
  }

  void stop() { ticker_.stop(); }

  /// Closes what expired, died or lost its peer, and tops up; false once no peer is in use.
  bool on_tick() {
    tick();
    return !pools_.empty();
  }

 private:
  struct Spare {
    std::unique_ptr<TlsStream> stream;
    std::chrono::steady_clock::time_point made;  ///< or returned: idle since
    bool returned = false;
  };
  struct Pool {
    std::string node_id;
    std::string relay;
    std::deque<Spare> idle;  ///< oldest first; taken from the back
    int dialing = 0;
    bool cooling = false;  ///< a refill failed: none until the next visitor
    std::chrono::steady_clock::time_point last_used;
  };

  void fill(const std::string& key) {
    const auto it = pools_.find(key);
    if (it == pools_.end()) {
      return;
    }
    Pool& pool = it->second;
    while (!pool.cooling && static_cast<int>(pool.idle.size()) + pool.dialing < kSparesPerPeer) {
      pool.dialing++;
      std::make_shared<PeerDial>(ioc_.get_executor(), tls_, config_, pool.node_id, pool.relay,
                                 [weak = weak_from_this(), key](PeerDial::Result r) {
                                   if (auto self = weak.lock()) {
                                     self->on_dialed(key, std::move(r));
                                   }
                                 })
          ->start();
    }
  }

  void on_dialed(const std::string& key, PeerDial::Result r) {
    const auto it = pools_.find(key);
    if (it == pools_.end()) {
      if (r.stream) {
        r.stream->close();  // the peer left meanwhile
      }
      return;
    }
    Pool& pool = it->second;
    pool.dialing--;
    if (r.failure != PeerDial::Failure::none) {
      stats_->spare_dial_failed++;
      pool.cooling = true;
      log_->info("relay.spare_failed node={} relay={} why=\"{}\"", pool.node_id, pool.relay, r.why);
      return;
    }
    pool.idle.push_back({std::move(r.stream), std::chrono::steady_clock::now(), false});
    stats_->spares_idle++;
  }

  void tick() {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = pools_.begin(); it != pools_.end();) {
      Pool& pool = it->second;
      const bool gone = routes_ && !routes_->has_node(pool.node_id, pool.relay);
      const bool unused = now - pool.last_used > kPoolUnusedFactor * config_.spare_idle;
      if (gone || unused) {
        stats_->spares_idle -= static_cast<std::int64_t>(pool.idle.size());
        (gone ? stats_->spare_dropped : stats_->spare_expired) += pool.idle.size();
        log_->debug("relay.spares_stop node={} relay={} closed={} reason={}", pool.node_id,
                    pool.relay, pool.idle.size(), gone ? "peer_left" : "unused");
        it = pools_.erase(it);  // the streams close; dials in flight find no pool
        continue;
      }
      const auto before = pool.idle.size();
      std::erase_if(pool.idle, [&](Spare& s) {
        if (now - s.made >= config_.spare_idle) {
          stats_->spare_expired++;
          return true;
        }
        if (!s.stream->idle_alive()) {
          stats_->spare_dead++;
          return true;
        }
        return false;
      });
      stats_->spares_idle -= static_cast<std::int64_t>(before - pool.idle.size());
      if (pool.idle.size() < before) {
        fill(it->first);
      }
      ++it;
    }
  }

  boost::asio::io_context& ioc_;
  std::shared_ptr<RelayTls> tls_;
  RelayConfig config_;
  std::shared_ptr<tunnel::ClusterRoutes> routes_;
  std::shared_ptr<RelayStats> stats_;
  std::shared_ptr<spdlog::logger> log_;
  SecondTicker ticker_;
  std::map<std::string, Pool, std::less<>> pools_;
};

/// One attempt to relay one visitor: a spare or a fresh dial, then header, status, splice.
class Outbound : public std::enable_shared_from_this<Outbound> {
 public:
  Outbound(std::shared_ptr<RelayDialer> dialer, tunnel::IncomingConnection conn,
           tunnel::RemoteRoute route, int attempt, bool use_spare)
      : dialer_(std::move(dialer)),
        conn_(std::move(conn)),
        route_(std::move(route)),
        attempt_(attempt),
        use_spare_(use_spare),
        timer_(conn_.socket.get_executor()) {}
  ~Outbound() {
    if (refill_) {
      refill_();  // the visitor never got to splice over the spare: replace it now
    }
  }

  void start() {
    if (dialer_->quarantined(route_.node_id)) {
      dialer_->stats_->out_quarantined++;
      fail("quarantined", gw::kAlertInternalError, "the peer failed less than 5 s ago");
      return;
    }
    if (use_spare_) {
      if (auto* shelf = dialer_->shelf_for(conn_.socket.get_executor())) {
        if (auto spare = shelf->take(route_); spare.stream) {
          from_spare_ = true;
          returned_ = spare.returned;
          refill_ = [shelf = shelf->weak_from_this(),
                     key = peer_key(route_.node_id, route_.relay)] {
            if (auto s = shelf.lock()) {
              s->post_fill(key);
            }
          };
          ready(std::move(spare.stream));
          return;
        }
      }
    }
    std::make_shared<PeerDial>(
        conn_.socket.get_executor(), dialer_->tls_, dialer_->config_, route_.node_id, route_.relay,
        [self = shared_from_this()](PeerDial::Result r) { self->on_dialed(std::move(r)); })
        ->start();
  }

 private:
  void on_dialed(PeerDial::Result r) {
    auto& stats = *dialer_->stats_;
    switch (r.failure) {
      case PeerDial::Failure::none:
        ready(std::move(r.stream));
        return;
      case PeerDial::Failure::address:
        stats.out_unreachable++;
        fail("unreachable", gw::kAlertInternalError, r.why);
        return;
      case PeerDial::Failure::unreachable:
        stats.out_unreachable++;
        dialer_->quarantine(route_.node_id);
        fail("unreachable", gw::kAlertInternalError, r.why);
        return;
      case PeerDial::Failure::handshake:
        stats.out_handshake++;
        dialer_->quarantine(route_.node_id);
        fail("handshake", gw::kAlertInternalError, r.why);
        return;
    }
  }

  /// A handshaken connection to the owner: the header and the ClientHello go, the status comes.
  void ready(std::unique_ptr<TlsStream> stream) {
    stream_ = std::move(stream);
    timer_.expires_after(dialer_->config_.handshake_timeout);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
      if (e || self->done_) {
        return;
      }
      self->timed_out_ = true;
      self->stream_->close();  // the wait in flight ends: lost() says why
    });
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
    // Protocol 2 frames the visitor's bytes from the first on (framed_stream.hpp).
    out_ = std::move(*header);
    if (RelayTls::framed(stream_->ssl())) {
      FramedStream::append_frames(out_, conn_.peeked);
    } else {
      out_.insert(out_.end(), conn_.peeked.begin(), conn_.peeked.end());
    }
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
    // A returned connection made no handshake for this visitor: resumed or not is its first's.
    const bool resumed = !returned_ && SSL_session_reused(stream_->ssl()) == 1;
    if (resumed) {
      stats.resumed++;
    }
    if (from_spare_) {
      stats.spare_used++;
    }
    // The ClientHello went with the header; the bridge counts only what flows from here on.
    stats.out_bridges->bytes_in.fetch_add(conn_.peeked.size(), std::memory_order_relaxed);
    log().debug("relay.out conn=t{} sni={} node={} relay={} resumed={} spare={} returned={}",
                conn_.id, conn_.server_name, route_.node_id, route_.relay, resumed, from_spare_,
                returned_);
    auto* sweep = dialer_->sweep_for(conn_.socket.get_executor());
    if (sweep == nullptr) {
      log().error(
          "relay.bug conn=t{} reason=\"relay() ran on an io_context the RelayDialer was "
          "not given\"",
          conn_.id);
      conn_.alert_and_close(gw::kAlertInternalError);
      return;
    }
    std::unique_ptr<tunnel::PublicStream> stream;
    if (RelayTls::framed(stream_->ssl())) {
      // After the visitor's clean end the connection goes back on this thread's shelf (the
      // bridge and its channel run here).
      stream = std::make_unique<FramedStream>(
          std::move(stream_), [shelf = shelf_weak(), key = peer_key(route_.node_id, route_.relay)](
                                  std::unique_ptr<tunnel::PublicStream> s) {
            if (auto sh = shelf.lock()) {
              sh->give_back(key, as_tls(std::move(s)));
            }
          });
    } else {
      stream = std::move(stream_);
    }
    auto channel = std::make_shared<RelayChannel>(std::move(stream), std::move(refill_));
    refill_ = nullptr;
    const tunnel::ConnectionStart start = conn_.start();
    auto bridge = std::make_shared<tunnel::Bridge>(
        conn_.take_stream(), std::vector<std::byte>{}, start,
        tunnel::EndpointLabel{"", "", 0, "", route_.node_id}, std::move(channel), dialer_->bridge_,
        stats.out_bridges, dialer_->log_,
        [](const tunnel::ConnectionClosed&) {});  // the owner writes the connection's record
    sweep->add(bridge);
    bridge->start();
  }

  /// The connection broke after the handshake (or the owner refused the header).
  void lost(const std::string& why) {
    if (done_) {
      return;
    }
    if (from_spare_) {
      // A spare the peer closed meanwhile (it restarted, or dropped it): the visitor has lost
      // nothing yet (no status, so the owner delivered nothing), and gets a fresh dial, once.
      // Not the "stale" retry: that one stays for the owner's answer.
      done_ = true;
      timer_.cancel();
      stream_->close();
      dialer_->stats_->spare_redialed++;
      log().info("relay.spare_lost conn=t{} node={} relay={} why=\"{}\"", conn_.id, route_.node_id,
                 route_.relay, timed_out_ ? "no status in time" : why);
      dialer_->dial(std::move(conn_), std::move(route_), attempt_, /*use_spare=*/false);
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
  std::weak_ptr<SpareShelf> shelf_weak() {
    auto* shelf = dialer_->shelf_for(conn_.socket.get_executor());
    return shelf ? shelf->weak_from_this() : std::weak_ptr<SpareShelf>();
  }

  std::shared_ptr<RelayDialer> dialer_;
  tunnel::IncomingConnection conn_;
  tunnel::RemoteRoute route_;
  int attempt_;
  bool use_spare_;                ///< may take a warm spare (not after one just failed)
  bool from_spare_ = false;       ///< stream_ is a warm spare
  bool returned_ = false;         ///< ... one that carried a visitor before
  std::function<void()> refill_;  ///< replaces the spare taken: once, when it is done with
  boost::asio::steady_timer timer_;
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
    shelves_.emplace(ioc, std::make_shared<SpareShelf>(*ioc, tls_, config_, routes_, stats_, log_));
  }
}

RelayDialer::~RelayDialer() = default;

SpareShelf* RelayDialer::shelf_for(const boost::asio::any_io_executor& ex) {
  auto* ioc = &static_cast<boost::asio::io_context&>(ex.context());
  const auto it = shelves_.find(ioc);
  return it == shelves_.end() ? nullptr : it->second.get();
}

DeadlineSweep* RelayDialer::sweep_for(const boost::asio::any_io_executor& ex) {
  auto* ioc = &static_cast<boost::asio::io_context&>(ex.context());
  const auto it = sweeps_.find(ioc);
  return it == sweeps_.end() ? nullptr : it->second.get();
}

void RelayDialer::relay(tunnel::IncomingConnection conn, tunnel::RemoteRoute route) {
  dial(std::move(conn), std::move(route), 1, true);
}

void RelayDialer::dial(tunnel::IncomingConnection conn, tunnel::RemoteRoute route, int attempt,
                       bool use_spare) {
  std::make_shared<Outbound>(shared_from_this(), std::move(conn), std::move(route), attempt,
                             use_spare)
      ->start();
}

void RelayDialer::retry_or_refuse(tunnel::IncomingConnection conn, int attempt) {
  if (attempt == 1) {
    stats_->retried++;
    // Only to an endpoint of the connection's own binding: a public visitor never reaches an
    // internal endpoint, a teammate's channel never a public one.
    auto again = routes_ ? routes_->find_remote(conn.server_name) : std::nullopt;
    if (again && again->internal == conn.internal) {
      dial(std::move(conn), std::move(*again), 2, true);
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

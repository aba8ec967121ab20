#include "sni_router/listener.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/printable.hpp"
#include "common/proxy_v2.hpp"
#include "sni_router/client_hello.hpp"
#include "sni_router/limits.hpp"
#include "tunnel/hostname.hpp"
#include "tunnel/tls_alert.hpp"

namespace gw::sni {
namespace {

/// Refusal lines are thinned to this many a second (common/per_second_budget.hpp); events and
/// metrics still count every connection.
constexpr std::uint32_t kRefusalLinesPerSecond = 50;

/// Most bytes read while looking for the ClientHello: the 64 KiB message cap plus record
/// headers for a hello split into many small records. Past this the hello is "too large".
constexpr std::size_t kMaxPeekBytes = kMaxClientHelloBytes + 16 * 1024;

/// How an SSH client's version string starts (RFC 4253 4.2); enough to tell it from TLS.
constexpr std::string_view kSshPrefix = "SSH-";

/// The smallest read; a new connection is refused when the budget can't cover it.
constexpr std::size_t kMinReadBytes = 512;

/// One connection from accept until it is routed or refused.
class Peek : public std::enable_shared_from_this<Peek> {
 public:
  Peek(boost::asio::ip::tcp::socket socket, boost::asio::ip::tcp::endpoint client, std::uint64_t id,
       std::shared_ptr<tunnel::EndpointRegistry> registry, const RouterConfig& config,
       std::shared_ptr<spdlog::logger> log, std::shared_ptr<tunnel::EventSink> events,
       std::shared_ptr<RouterStats> stats, std::shared_ptr<PerIpCounter> per_ip,
       std::shared_ptr<PerSecondBudget> log_budget, bool from_trusted_proxy,
       std::shared_ptr<const Listener::Cluster> cluster,
       std::shared_ptr<const Listener::SshHandoff> ssh)
      : socket_(std::move(socket)),
        client_(std::move(client)),
        timer_(socket_.get_executor()),
        id_(id),
        registry_(std::move(registry)),
        log_(std::move(log)),
        events_(std::move(events)),
        stats_(std::move(stats)),
        per_ip_(std::move(per_ip)),
        log_budget_(std::move(log_budget)),
        expect_proxy_header_(from_trusted_proxy),
        cluster_(std::move(cluster)),
        ssh_(std::move(ssh)) {
    accepted_at_ = std::chrono::steady_clock::now();
    accepted_wall_ = std::chrono::system_clock::now();
    boost::system::error_code ec;
    socket_.non_blocking(true, ec);
    socket_.set_option(boost::asio::ip::tcp::no_delay(true), ec);
    timeout_ = config.client_hello_timeout;
    budget_ = config.pending_bytes_budget;
    large_budget_ = config.pending_bytes_budget - config.pending_bytes_reserve;
    max_pending_per_ip_ = config.max_pending_per_ip;
    stats_->pending++;
    if (!expect_proxy_header_) {
      counted_ip_ = client_.address();  // the listener counted it before constructing us
    }
    // Behind a trusted proxy the PROXY header comes first and is consumed by reading, so the
    // socket could no longer be handed to libssh untouched: such connections are TLS only.
    classifying_ = ssh_ != nullptr && !expect_proxy_header_;
  }
  ~Peek() {
    release_budget();
    stats_->pending--;
    if (counted_ip_) {
      per_ip_->remove(*counted_ip_);
    }
  }

  void start() {
    if (classifying_) {
      switch (classify()) {
        case Kind::tls:
          break;
        case Kind::ssh:
          to_ssh();
          return;
        case Kind::unknown:
          arm_timer(accepted_at_ + std::min<std::chrono::milliseconds>(kSshSilence, timeout_));
          wait_readable();
          return;
      }
    }
    arm_timer(accepted_at_ + timeout_);
    on_readable();  // bytes may already be here (edge-triggered waits need a first try)
  }

 private:
  enum class Kind { unknown, tls, ssh };

  /// While classifying, the deadline is the SSH silence delay; after it, the ClientHello's.
  void arm_timer(std::chrono::steady_clock::time_point at) {
    timer_.expires_at(at);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->done_) {
        return;
      }
      if (self->classifying_) {
        self->to_ssh();  // silent: an SSH client waiting for our version string
        return;
      }
      if (const auto deadline = self->accepted_at_ + self->timeout_;
          std::chrono::steady_clock::now() < deadline) {
        self->arm_timer(deadline);  // was the silence timer: TLS, the hello's deadline now
        return;
      }
      self->stats_->timeout++;
      self->refuse("timeout", "timeout", std::nullopt, "no ClientHello within the timeout");
    });
  }

  /// --ssh-on-tls-port: looks at the first bytes with MSG_PEEK, so that an SSH connection
  /// reaches libssh untouched (libssh reads the client's version string from the fd itself;
  /// nothing to replay). One byte other than 'S' (a TLS record starts with 0x16) is enough
  /// to say TLS; "SSH-" says SSH. A closed or failed socket is left to the read path.
  Kind classify() {
    char head[kSshPrefix.size()];
    const ssize_t n = ::recv(socket_.native_handle(), head, sizeof head, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      return Kind::unknown;
    }
    const auto got = static_cast<std::size_t>(std::max<ssize_t>(n, 0));
    if (n <= 0 || std::string_view(head, got) != kSshPrefix.substr(0, got)) {
      classifying_ = false;
      return Kind::tls;
    }
    return got == kSshPrefix.size() ? Kind::ssh : Kind::unknown;  // "SS": wait for the rest
  }

  void to_ssh() {
    stats_->ssh++;
    log_->debug("sni.to_ssh conn=t{} client={}", id_, client_ip());
    done_ = true;
    timer_.cancel();
    release_budget();
    (*ssh_)(std::move(socket_));  // our per-IP count goes with us; the SSH side counts its own
  }

  void wait_readable() {
    socket_.async_wait(boost::asio::ip::tcp::socket::wait_read,
                       [self = shared_from_this()](const boost::system::error_code& ec) {
                         if (!ec && !self->done_) {
                           self->on_readable();
                         }
                       });
  }

  void on_readable() {
    if (classifying_) {
      switch (classify()) {
        case Kind::tls:
          break;  // the silence timer re-arms itself for the hello's deadline (no cancel here)
        case Kind::ssh:
          to_ssh();
          return;
        case Kind::unknown:
          wait_readable();
          return;
      }
    }
    for (;;) {
      boost::system::error_code ec;
      const std::size_t available = socket_.available(ec);
      const std::size_t room = kMaxPeekBytes - buffer_.size();
      const std::size_t want = std::min(room, std::max<std::size_t>(available, kMinReadBytes));
      const std::size_t old = buffer_.size();
      if (!reserve(old + want)) {
        stats_->over_limit++;
        refuse("limit", "limit", gw::kAlertInternalError,
               "the ClientHellos being read hold the whole pending-hello memory budget");
        return;
      }
      buffer_.resize(old + want);  // within the capacity reserve() charged: no reallocation
      const std::size_t n = socket_.read_some(boost::asio::buffer(buffer_.data() + old, want), ec);
      buffer_.resize(old + n);
      if (ec == boost::asio::error::would_block) {
        wait_readable();
        return;
      }
      if (ec) {
        // Gone before saying anything useful: nothing to answer.
        stats_->closed_early++;
        log_->debug("sni.closed_early conn=t{} client={} bytes={}", id_, client_ip(),
                    buffer_.size());
        emit_refused("closed_early", "client_closed", 0);
        finish();
        return;
      }
      if (expect_proxy_header_ && !read_proxy_header()) {
        return;  // refused
      }
      if (expect_proxy_header_) {
        continue;  // the header is not complete yet
      }
      // Can't make progress yet: skip re-parsing (keeps dribbling O(n)). A full buffer is
      // always parsed, so that it is refused below: with no room left the next read would
      // return 0 bytes and this loop would spin forever on its I/O thread.
      if (buffer_.size() < need_at_least_ && buffer_.size() < kMaxPeekBytes) {
        continue;
      }
      const ClientHelloResult r = parse_client_hello(buffer_);
      if (r.status == ParseStatus::need_more) {
        need_at_least_ = std::max(r.need_at_least, buffer_.size() + 1);
        if (buffer_.size() >= kMaxPeekBytes) {
          stats_->too_large++;
          refuse("too_large", "too_large", gw::kAlertRecordOverflow,
                 "ClientHello over the size cap");
          return;
        }
        continue;
      }
      if (r.status == ParseStatus::invalid) {
        refuse_invalid(r.error);
        return;
      }
      route(r);
      return;
    }
  }

  /// A trusted proxy's PROXY v2 header at the start of buffer_: once complete, its source is the
  /// visitor (client_, counted per IP from now on) and its bytes leave the buffer, so the
  /// ClientHello parser sees what follows. False when the connection was refused.
  bool read_proxy_header() {
    if (buffer_.size() < need_at_least_) {
      return true;
    }
    const auto r = proxy::parse(buffer_);
    if (r.status == proxy::Status::need_more) {
      need_at_least_ = r.need_at_least;
      return true;
    }
    if (r.status == proxy::Status::invalid) {
      stats_->bad_proxy_header++;
      refuse("bad_proxy_header", "bad_proxy_header", std::nullopt,
             r.error.message() +
                 ": connections from a --trusted-proxy must start with a PROXY v2 header "
                 "(HAProxy: send-proxy-v2)");
      return false;
    }
    expect_proxy_header_ = false;
    from_proxy_ = true;
    need_at_least_ = 1;
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(r.consumed));
    const auto via = client_.address();
    if (r.header.source) {
      client_ = *r.header.source;
    }  // else LOCAL (a health check) or no IP family: the balancer itself is the client
    if (!per_ip_->try_add(client_.address(), max_pending_per_ip_)) {
      stats_->over_limit++;
      refuse("limit", "limit", std::nullopt, "too many connections waiting to send a ClientHello");
      return false;
    }
    counted_ip_ = client_.address();
    log_->debug("sni.proxy_header conn=t{} client={} via={}", id_, client_ip(), via.to_string());
    return true;
  }

  void refuse_invalid(std::error_code error) {
    const auto alert = alert_for(error);
    const char* reason = "malformed";
    if (error == errc::not_tls || error == errc::sslv2_client_hello) {
      stats_->not_tls++;
      reason = "not_tls";
      if (ssh_ && from_proxy_ && starts_with_ssh()) {
        refuse("invalid", reason, alert,
               "SSH on the TLS port does not work through a --trusted-proxy (its PROXY header "
               "comes first): have the balancer send SSH to --ssh-listen");
        return;
      }
    } else if (error == errc::client_hello_too_large || error == errc::record_too_large) {
      stats_->too_large++;
      reason = "too_large";
    } else {
      stats_->malformed++;
    }
    refuse("invalid", reason, alert, error.message());
  }

  void route(const ClientHelloResult& r) {
    if (!r.server_name) {
      stats_->no_sni++;
      refuse("no_sni", "no_sni", gw::kAlertUnrecognizedName,
             "ClientHello has no server name (SNI): connect by hostname");
      return;
    }
    auto name = tunnel::Hostname::parse(*r.server_name, /*allow_wildcard=*/false);
    if (!name) {
      stats_->bad_sni++;
      sni_ = printable(*r.server_name, 100);
      refuse("bad_sni", "bad_sni", gw::kAlertUnrecognizedName, name.error().message());
      return;
    }
    sni_ = name->str();
    std::optional<tunnel::RemoteRoute> remote;
    if (cluster_) {
      remote = cluster_->routes->find_remote(sni_);
      if (remote && !remote->internal) {
        stats_->relayed++;
        hand_over();
        cluster_->relay->relay(incoming(), std::move(*remote));
        return;
      }
    }
    tunnel::Route found = remote ? tunnel::Route{} : registry_->route(sni_);
    if (remote || found.internal) {
      // Reached only through the SSH side (of whichever node owns it): answered like an unknown
      // name, so the public port says nothing about it; the event and the counter say why.
      stats_->internal_only++;
      refuse("internal_endpoint", "internal_endpoint", gw::kAlertUnrecognizedName,
             "an internal endpoint: not routed from the public port (ssh -L / -W only)");
      return;
    }
    auto endpoint = std::move(found.endpoint);
    if (!endpoint) {
      stats_->no_route++;
      refuse("no_route", "no_route", gw::kAlertUnrecognizedName, "no tunnel serves this name");
      return;
    }
    hand_over();
    endpoint->deliver(incoming());
  }

  /// Routed (here or to another node): counted, the deadline and the budget let go.
  void hand_over() {
    stats_->routed++;
    stats_->client_hello_wait.observe(std::chrono::steady_clock::now() - accepted_at_);
    log_->debug("sni.route conn=t{} client={} sni={}", id_, client_ip(), sni_);
    done_ = true;
    timer_.cancel();
    release_budget();  // the bytes are the tunnel's now, bounded by its own limits
  }

  tunnel::IncomingConnection incoming() {
    return tunnel::IncomingConnection{std::move(socket_), std::move(buffer_), sni_,    client_, id_,
                                      accepted_at_,       accepted_wall_,     nullptr, {}};
  }

  /// `reason` is the stable name events and metrics use; `why` is for people.
  void refuse(const char* what, const char* reason, std::optional<std::uint8_t> alert,
              std::string_view why) {
    warn_thinned(*log_, *log_budget_,
                 "sni.refuse conn=t{} client={} sni={} outcome={} reason=\"{}\"{}", id_,
                 client_ip(), sni_.empty() ? "-" : sni_, what, why);
    const std::size_t sent = alert ? tunnel::send_alert_and_close(socket_, *alert) : 0;
    emit_refused(reason, "refused", sent);
    finish();
  }

  /// `bytes_out`: the alert, when one was sent. Every outcome is also a ClientHello-wait
  /// sample: a slow or silent client shows up in the histogram, not only routed ones.
  void emit_refused(const char* refusal, const char* close_reason, std::size_t bytes_out) {
    stats_->client_hello_wait.observe(std::chrono::steady_clock::now() - accepted_at_);
    events_->emit(tunnel::connection_closed(
        tunnel::ConnectionStart{
            id_, client_ip(), client_.port(), sni_, accepted_at_, accepted_wall_, {}},
        nullptr, buffer_.size(), bytes_out, close_reason, refusal));
  }

  void finish() {
    done_ = true;
    timer_.cancel();
    boost::system::error_code ec;
    socket_.close(ec);
    std::vector<std::byte>().swap(buffer_);  // give the bytes back now, not when the last
    release_budget();                        // handler holding this Peek has run
  }

  /// Makes room for `size` bytes in buffer_ and charges what the buffer then holds (its
  /// capacity, not its size: that is the memory actually pinned) to the shared budget. Growth
  /// doubles, capped at the read cap, so a dribbling client costs few reallocations and an
  /// 80 KiB hello never holds more than 80 KiB. False: the budget can't cover it; nothing
  /// changed.
  bool reserve(std::size_t size) {
    if (size <= buffer_.capacity()) {
      return true;
    }
    const std::size_t capacity = std::min(kMaxPeekBytes, std::max(size, 2 * buffer_.capacity()));
    const auto delta = static_cast<std::int64_t>(capacity) - charged_;
    const std::int64_t limit = capacity <= kSmallHelloBytes ? budget_ : large_budget_;
    std::int64_t held = stats_->pending_bytes.load(std::memory_order_relaxed);
    do {
      if (held + delta > limit) {
        return false;
      }
    } while (!stats_->pending_bytes.compare_exchange_weak(held, held + delta,
                                                          std::memory_order_relaxed));
    buffer_.reserve(capacity);
    charged_ += delta;
    // reserve() may round up; charge what was really allocated (a little over the limit).
    const auto extra = static_cast<std::int64_t>(buffer_.capacity()) - charged_;
    stats_->pending_bytes.fetch_add(extra, std::memory_order_relaxed);
    charged_ += extra;
    return true;
  }

  void release_budget() {
    stats_->pending_bytes.fetch_sub(charged_, std::memory_order_relaxed);
    charged_ = 0;
  }

  std::string client_ip() const { return client_.address().to_string(); }

  bool starts_with_ssh() const {
    return buffer_.size() >= kSshPrefix.size() &&
           std::memcmp(buffer_.data(), kSshPrefix.data(), kSshPrefix.size()) == 0;
  }

  boost::asio::ip::tcp::socket socket_;
  boost::asio::ip::tcp::endpoint client_;
  boost::asio::steady_timer timer_;
  std::uint64_t id_;
  std::shared_ptr<tunnel::EndpointRegistry> registry_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<tunnel::EventSink> events_;
  std::shared_ptr<RouterStats> stats_;
  std::shared_ptr<PerIpCounter> per_ip_;  ///< counted by the listener before construction
  std::shared_ptr<PerSecondBudget> log_budget_;
  bool expect_proxy_header_;  ///< from a trusted proxy, and its header is not read yet
  std::shared_ptr<const Listener::Cluster> cluster_;  ///< null on a single node
  std::shared_ptr<const Listener::SshHandoff> ssh_;   ///< null: TLS only
  bool classifying_ = false;  ///< SSH or TLS not known yet (nothing read from the socket)
  bool from_proxy_ = false;   ///< a trusted proxy's header was read
  /// The address counted in per_ip_: the socket's peer, or for a trusted proxy the visitor
  /// once its header named one (the balancer itself would hit the per-IP cap at once).
  std::optional<boost::asio::ip::address> counted_ip_;
  int max_pending_per_ip_ = 0;
  std::chrono::milliseconds timeout_;
  std::chrono::steady_clock::time_point accepted_at_;
  std::chrono::system_clock::time_point accepted_wall_;
  std::vector<std::byte> buffer_;
  std::size_t need_at_least_ = 1;
  std::int64_t charged_ = 0;  ///< buffer_'s capacity, charged to stats_->pending_bytes
  std::int64_t budget_ = 0;
  std::int64_t large_budget_ = 0;  ///< for growth past kSmallHelloBytes: budget minus reserve
  std::string sni_;
  bool done_ = false;
};

}  // namespace

Listener::Listener(std::shared_ptr<tunnel::EndpointRegistry> registry, RouterConfig config,
                   std::shared_ptr<spdlog::logger> log, std::shared_ptr<tunnel::EventSink> events)
    : registry_(std::move(registry)),
      config_(config),
      log_(std::move(log)),
      events_(std::move(events)),
      log_budget_(std::make_shared<PerSecondBudget>(kRefusalLinesPerSecond)) {}

boost::asio::ip::tcp::endpoint Listener::listen(
    const std::vector<boost::asio::io_context*>& contexts,
    const boost::asio::ip::tcp::endpoint& where) {
  return acceptors_.listen(
      contexts, where,
      [this](boost::asio::io_context&, boost::asio::ip::tcp::socket socket) {
        on_accept(std::move(socket));
      },
      [this](const boost::system::error_code& ec) {
        log_->error("sni.accept_failed error=\"{}\"", ec.message());
      });
}

void Listener::on_accept(boost::asio::ip::tcp::socket socket) {
  stats_->accepted++;
  boost::system::error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  if (ec) {
    return;  // already gone
  }
  const std::int64_t bytes_left = config_.pending_bytes_budget - stats_->pending_bytes.load();
  const bool out_of_bytes = bytes_left < static_cast<std::int64_t>(kMinReadBytes);
  const bool trusted = std::any_of(config_.trusted_proxies.begin(), config_.trusted_proxies.end(),
                                   [&](const Cidr& c) { return c.contains(remote.address()); });
  // A trusted proxy's connections are counted per visitor once its header is read.
  if (out_of_bytes || stats_->pending.load() >= config_.max_pending ||
      (!trusted && !per_ip_->try_add(remote.address(), config_.max_pending_per_ip))) {
    // Refused before reading anything: a plain close is the cheapest answer to a flood.
    stats_->over_limit++;
    const auto id = next_id_++;
    warn_thinned(*log_, *log_budget_, "sni.refuse conn=t{} client={} reason=\"{}\"{}", id,
                 remote.address().to_string(),
                 out_of_bytes ? "the ClientHellos being read hold the whole pending-hello memory "
                                "budget"
                              : "too many connections waiting to send a ClientHello");
    socket.close(ec);
    events_->emit(
        tunnel::connection_closed(tunnel::ConnectionStart{id,
                                                          remote.address().to_string(),
                                                          remote.port(),
                                                          {},
                                                          std::chrono::steady_clock::now(),
                                                          std::chrono::system_clock::now(),
                                                          {}},
                                  nullptr, 0, 0, "refused", "limit"));
    return;
  }
  std::make_shared<Peek>(std::move(socket), remote, next_id_++, registry_, config_, log_, events_,
                         stats_, per_ip_, log_budget_, trusted, cluster_, ssh_)
      ->start();
}

}  // namespace gw::sni

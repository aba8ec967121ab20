// The admin HTTP server (`--admin-listen`): health, Prometheus metrics, and a small JSON API
// over live endpoints and sessions (DESIGN section 6; shapes in docs/api.md). Boost.Beast on
// Asio coroutines; every connection is bounded (header size, 64 KiB body, read/write timeout),
// and no flood of connections that never present the token can starve the ones that do, or
// /healthz: such connections are capped per IP and in all (the newest pushes out the oldest),
// get 5 s to send an authorised request, and a refused request closes its connection.
// Without a token, only requests whose Host names this server are served (DNS rebinding).
// Deliberately not here: TLS on the admin port (put it behind loopback or a proxy),
// pagination, anything that changes config, rate limits on requests. The data comes from an
// AdminBackend the app implements over the live session table, so this file knows nothing
// about SSH.
//
// How to wire (lead):
//   class LiveBackend : public gw::app::AdminBackend { ... };  // thread-safe, see below
//   std::string why;
//   if (!gw::app::admin_listen_allowed(addr, !token.empty(), &why)) { fail(why); }
//   gw::app::AdminOptions opts; opts.token = token; opts.log = loggers.app;
//   opts.stats = admin_stats;              // shared with /metrics
//   gw::app::AdminServer admin(*contexts[0], backend, opts);
//   admin.listen({addr, port});            // throws system_error if it can't bind
//   log("admin.ready addr={}", admin.local_endpoint());
//   ... on shutdown: admin.stop();
// `backend` must outlive the io_context's run (connections hold a reference to it).
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spdlog {
class logger;
}

namespace gw::app {

/// One endpoint as GET /api/endpoints shows it.
struct EndpointView {
  std::string id;   ///< "ep_12"
  std::string url;  ///< "tls://name[:port]"
  std::string proto = "tls";
  std::string created_at;  ///< RFC 3339 (app::rfc3339 in event_log.hpp makes one)
  bool pool = false;
  std::uint64_t session_id = 0;
  std::string key_fingerprint, key_name;
  std::string client_addr;  ///< the SSH client's "ip:port"
  std::uint64_t open_connections = 0, bytes_in = 0, bytes_out = 0;
  /// Cluster mode: the owning node ("" on a single node: the field is left out), and for an
  /// endpoint on another node its session there (this node has no counters for it).
  std::string node;
  std::string node_session;
  std::string binding = "public";  ///< "internal": reached only through ssh -L / -W
};

/// One SSH session as GET /api/sessions shows it.
struct SessionView {
  std::uint64_t id = 0;
  std::string client_addr, user, key_fingerprint, key_name;
  std::string started_at;  ///< RFC 3339
  std::vector<std::string> endpoint_urls;
  std::uint64_t open_connections = 0;
  std::string state;  ///< e.g. "authenticating", "active", "closing"
};

/// What the admin server reads and does. Called from the admin io_context's threads while
/// sessions run elsewhere: implementations must be thread-safe (copy under the directory's
/// lock, post to the session's strand for close). May throw: the request gets a 500.
class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  virtual std::vector<EndpointView> endpoints() = 0;
  virtual std::vector<SessionView> sessions() = 0;
  /// Starts closing session `id`, showing `message` to its user (already stripped of control
  /// characters, at most 256 bytes). Returns false if there is no such session.
  virtual bool close_session(std::uint64_t id, std::string message) = 0;
  /// The whole /metrics body (app::render_metrics).
  virtual std::string metrics_text() = 0;
  /// GET /api/cluster's JSON object; nullopt on a single node (the route answers 404).
  virtual std::optional<std::string> cluster_json() { return std::nullopt; }
};

/// The admin server's own counters, for /metrics. Any thread (atomics).
struct AdminStats {
  std::atomic<std::uint64_t> unauthorized{0};  ///< 401: token missing or wrong
  std::atomic<std::uint64_t> bad_host{0};      ///< 421: no token, and a Host not naming us
  std::atomic<std::uint64_t> limit{0};         ///< closed to make room for a newer connection
  std::atomic<std::uint64_t> timeout{0};       ///< no authorised request within the first deadline
  std::atomic<std::int64_t> open_unauthorized{0};  ///< gauge: no authorised request yet
  std::atomic<std::int64_t> open_authorized{0};    ///< gauge: kept alive after one
};

// The defaults below are the gateway's (main sets none of them); tests shorten them. Why each
// value is what it is: docs/security.md, "Admin API".
struct AdminOptions {
  std::string token;  ///< empty: no auth; else every route but /healthz needs "Bearer <token>"
  std::chrono::milliseconds read_timeout{10'000};  ///< per request read, and per response write
  std::size_t header_limit = 8 * 1024;             ///< larger request headers get 431
  std::size_t body_limit = 64 * 1024;              ///< larger request bodies get 413
  /// From accept until the connection's first authorised request is read: a connection that
  /// has only asked /healthz, or nothing, is closed then. Long enough for any local client
  /// (they send at once); short enough that idle connections can't pile up.
  std::chrono::milliseconds unauthorized_timeout{5'000};
  /// Connections without an authorised request yet, from one IP: room for a Prometheus
  /// scraper, a health check, a browser's 6 and a few scripts on one host.
  std::size_t max_unauthorized_per_ip = 16;
  /// ... in all (8 hosts at their cap). Past either cap the new connection is taken and the
  /// oldest idle one (of that IP, else overall) is closed: a flood recycles its own
  /// connections, while a client that asks at once (health checks, scrapers) is answered
  /// first. Only the overall cap is hard: when none of an IP's connections is idle, its cap
  /// yields.
  std::size_t max_unauthorized = 128;
  /// A connection this young, or with its request in, is not idle: it can't be pushed out
  /// while an idle one can. Far longer than a local client takes to send its request (well
  /// under a millisecond), far shorter than the first deadline.
  std::chrono::milliseconds unauthorized_grace{250};
  /// Connections kept alive after an authorised request; past it, answers close the
  /// connection (the request is still served).
  std::size_t max_connections = 64;
  std::shared_ptr<AdminStats> stats;    ///< may be null: then nothing is counted
  std::shared_ptr<spdlog::logger> log;  ///< may be null: then nothing is logged
  /// The bound address, for the Host check; AdminServer::listen() sets it. Port 0: any port.
  boost::asio::ip::tcp::endpoint listen;
};

/// True if the admin API may listen on `address`: always for loopback (127/8, ::1, and
/// ::ffff:127.x), otherwise only with a token. On false, `*why` (if given) says what to do.
bool admin_listen_allowed(const boost::asio::ip::address& address, bool has_token,
                          std::string* why);

/// Constant-time equality of a presented token against the configured one (time depends only
/// on the configured token's length).
bool token_equal(std::string_view presented, std::string_view expected);

/// True if `host` (a Host header value) names this server for a client with no token:
/// `localhost` or an IP literal that is loopback or equal to `listen`'s address (IPv6 in
/// brackets), each with no port or `listen`'s port (port 0: any). Case-insensitive. Pure; the
/// guard against DNS rebinding (a web page's own name pointed at 127.0.0.1).
bool admin_host_allowed(std::string_view host, const boost::asio::ip::tcp::endpoint& listen);

/// What a request may do, decided from its header alone (before any body is read).
enum class AdminAccess {
  open,          ///< /healthz: any client
  granted,       ///< the token matches, or there is none and the Host check passes
  unauthorized,  ///< token set, missing or wrong: 401, then close
  misdirected,   ///< no token and a Host that doesn't name us: 421, then close
};
AdminAccess admin_access(const boost::beast::http::request_header<>& req,
                         const AdminOptions& options);

using AdminRequest = boost::beast::http::request<boost::beast::http::string_body>;
using AdminResponse = boost::beast::http::response<boost::beast::http::string_body>;

/// Routes one parsed request (pure apart from the backend calls; no sockets), so it can be
/// unit-tested. Sets status, headers and body (payload prepared); not keep-alive.
AdminResponse handle_admin_request(const AdminRequest& req, AdminBackend& backend,
                                   const AdminOptions& options);

/// The listener. Not copyable; stop() or destruction stops accepting (live connections end
/// at their next request boundary or timeout). Destroy it before the io_context.
class AdminServer {
 public:
  AdminServer(boost::asio::io_context& ioc, AdminBackend& backend, AdminOptions options);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  /// Binds, listens and starts accepting. Throws boost::system::system_error on failure
  /// (control plane). Call once.
  void listen(const boost::asio::ip::tcp::endpoint& where);
  /// The bound address (port 0 resolved). Valid after listen().
  boost::asio::ip::tcp::endpoint local_endpoint() const { return local_; }
  /// Stops accepting. Thread-safe, idempotent.
  void stop();

  struct State;  // shared with the accept loop and connections; defined in the .cpp

 private:
  std::shared_ptr<State> state_;
  boost::asio::ip::tcp::endpoint local_;
};

}  // namespace gw::app

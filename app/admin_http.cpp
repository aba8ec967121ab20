// Admin HTTP server: routing (handle_admin_request) and the bounded Beast connection loop.
// See admin_http.hpp; the JSON shapes are docs/api.md.
#include "app/admin_http.hpp"

#include <spdlog/spdlog.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <charconv>
#include <exception>
#include <list>
#include <mutex>
#include <optional>

#include "app/event_log.hpp"  // rfc3339
#include "app/json.hpp"
#include "common/ascii.hpp"
#include "common/per_second_budget.hpp"
#include "common/printable.hpp"
#include "sshd/session_handle.hpp"

namespace gw::app {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kMaxCloseMessage = 256;
constexpr const char* kDefaultCloseMessage = sshd::kAdminCloseMessage;
constexpr const char* kJsonType = "application/json";

// ---- JSON output -------------------------------------------------------------------------

std::string endpoint_json(const EndpointView& e) {
  JsonObject o;
  o.str("id", e.id);
  if (!e.node.empty()) {
    o.str("node", e.node).str_or_null("node_session", e.node_session);
  }
  return o.str("url", e.url)
      .str("proto", e.proto)
      .str("created_at", e.created_at)
      .boolean("pool", e.pool)
      .str("binding", e.binding)
      .num("session_id", e.session_id)
      .str("key_fingerprint", e.key_fingerprint)
      .str("key_name", e.key_name)
      .str("client_addr", e.client_addr)
      .num("open_connections", e.open_connections)
      .num("bytes_in", e.bytes_in)
      .num("bytes_out", e.bytes_out)
      .take();
}

std::string session_json(const SessionView& s) {
  return JsonObject()
      .num("id", s.id)
      .str("client_addr", s.client_addr)
      .str("user", s.user)
      .str("key_fingerprint", s.key_fingerprint)
      .str("key_name", s.key_name)
      .str("started_at", s.started_at)
      .str_array("endpoint_urls", s.endpoint_urls)
      .num("open_connections", s.open_connections)
      .str("state", s.state)
      .take();
}

/// {"NAME":[item, ...]} with each item written by `to_json`.
template <class T, class ToJson>
std::string json_list(std::string_view name, const std::vector<T>& items, ToJson to_json) {
  std::string body = "{";
  append_json_string(body, name);
  body += ":[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    body += i == 0 ? "" : ",";
    body += to_json(items[i]);
  }
  return body + "]}";
}

// ---- responses -----------------------------------------------------------------------------

AdminResponse make_response(const AdminRequest& req, http::status status,
                            std::string_view content_type, std::string body) {
  AdminResponse res{status, req.version()};
  res.set(http::field::server, "snigate");
  res.set(http::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  if (!content_type.empty()) {
    res.set(http::field::content_type, content_type);
  }
  res.body() = std::move(body);
  res.keep_alive(false);  // the connection loop decides
  res.prepare_payload();
  return res;
}

AdminResponse error_response(const AdminRequest& req, http::status status,
                             std::string_view message) {
  std::string body = "{\"error\":{\"status\":";
  body += std::to_string(static_cast<unsigned>(status));
  body += ",\"message\":";
  append_json_string(body, message);
  body += "}}";
  return make_response(req, status, kJsonType, std::move(body));
}

AdminResponse method_not_allowed(const AdminRequest& req, std::string_view allow) {
  auto res = error_response(
      req, http::status::method_not_allowed,
      "method " + std::string(req.method_string()) + " not allowed; use " + std::string(allow));
  res.set(http::field::allow, allow);
  return res;
}

// ---- request helpers -----------------------------------------------------------------------

/// Optional white space around header values (RFC 9110): spaces and tabs only.
std::string_view trim(std::string_view s) { return ascii::trim(s, " \t"); }

bool authorized(const http::request_header<>& req, std::string_view token) {
  const auto it = req.find(http::field::authorization);
  if (it == req.end()) {
    return false;
  }
  const std::string_view value = trim(std::string_view(it->value().data(), it->value().size()));
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() || !ascii::iequals(value.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  return token_equal(trim(value.substr(kScheme.size())), token);
}

// "17" or "s17" (the log spelling); nullopt for anything else, including overflow.
std::optional<std::uint64_t> parse_session_id(std::string_view s) {
  if (!s.empty() && s.front() == 's') {
    s.remove_prefix(1);
  }
  std::uint64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc{} || r.ptr != s.data() + s.size()) {
    return std::nullopt;
  }
  return v;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded decoding; a bad %-escape is kept literally. Ours, not
// Boost.URL's: Debian 12's Boost 1.81 (Boost.URL's first release) segfaults in parse_query()
// on an empty query and its library lacks a params_view constructor its header declares; these
// twenty lines have unit tests and need neither.
std::string url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string() : url_decode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) {
      break;
    }
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

// The message goes to a user's terminal: no control bytes, bounded, never empty.
std::string sanitize_message(std::string_view raw) {
  std::string out;
  for (const char ch : trim(raw)) {
    if (out.size() >= kMaxCloseMessage) {
      break;
    }
    const auto c = static_cast<unsigned char>(ch);
    out += (c < 0x20 || c == 0x7f) ? ' ' : ch;
  }
  // Don't leave half a UTF-8 character at the cut: drop trailing continuation/lead bytes.
  if (raw.size() > out.size()) {
    while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0x80) != 0) {
      out.pop_back();
    }
  }
  return std::string(trim(out)).empty() ? kDefaultCloseMessage : out;
}

// ---- routes --------------------------------------------------------------------------------

AdminResponse route(const AdminRequest& req, AdminBackend& backend, std::string_view path,
                    std::string_view query) {
  const auto method = req.method();
  if (path == "/metrics") {
    if (method != http::verb::get) {
      return method_not_allowed(req, "GET");
    }
    return make_response(req, http::status::ok, "text/plain; version=0.0.4; charset=utf-8",
                         backend.metrics_text());
  }
  if (path == "/api/endpoints") {
    if (method != http::verb::get) {
      return method_not_allowed(req, "GET");
    }
    return make_response(req, http::status::ok, kJsonType,
                         json_list("endpoints", backend.endpoints(), endpoint_json));
  }
  constexpr std::string_view kEndpointPrefix = "/api/endpoints/";
  if (path.starts_with(kEndpointPrefix) && path.size() > kEndpointPrefix.size()) {
    if (method != http::verb::get) {
      return method_not_allowed(req, "GET");
    }
    const std::string_view id = path.substr(kEndpointPrefix.size());
    for (const auto& e : backend.endpoints()) {
      if (e.id == id) {
        return make_response(req, http::status::ok, kJsonType, endpoint_json(e));
      }
    }
    return error_response(req, http::status::not_found, "no endpoint " + std::string(id));
  }
  if (path == "/api/cluster") {
    if (method != http::verb::get) {
      return method_not_allowed(req, "GET");
    }
    if (auto body = backend.cluster_json()) {
      return make_response(req, http::status::ok, kJsonType, std::move(*body));
    }
    return error_response(req, http::status::not_found,
                          "not a cluster node (cluster mode needs --cluster-etcd)");
  }
  if (path == "/api/sessions") {
    if (method != http::verb::get) {
      return method_not_allowed(req, "GET");
    }
    return make_response(req, http::status::ok, kJsonType,
                         json_list("sessions", backend.sessions(), session_json));
  }
  constexpr std::string_view kSessionPrefix = "/api/sessions/";
  if (path.starts_with(kSessionPrefix) && path.size() > kSessionPrefix.size()) {
    const std::string_view raw_id = path.substr(kSessionPrefix.size());
    const auto id = parse_session_id(raw_id);
    if (method == http::verb::get) {
      if (id) {
        for (const auto& s : backend.sessions()) {
          if (s.id == *id) {
            return make_response(req, http::status::ok, kJsonType, session_json(s));
          }
        }
      }
      return error_response(req, http::status::not_found, "no session " + std::string(raw_id));
    }
    if (method == http::verb::delete_) {
      std::string message;
      if (auto q = query_param(query, "message")) {
        message = std::move(*q);
      } else {
        message = req.body();  // text/plain body; bounded by the parser's body limit
      }
      if (!id || !backend.close_session(*id, sanitize_message(message))) {
        return error_response(req, http::status::not_found, "no session " + std::string(raw_id));
      }
      return make_response(req, http::status::no_content, "", "");
    }
    return method_not_allowed(req, "GET, DELETE");
  }
  return error_response(req, http::status::not_found, "no route for " + std::string(path));
}

}  // namespace

bool token_equal(std::string_view presented, std::string_view expected) {
  // Loop over the expected length only, so timing reveals nothing about the presented bytes.
  unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const char p = i < presented.size() ? presented[i] : '\0';
    diff |= static_cast<unsigned char>(p ^ expected[i]);
  }
  return diff == 0;
}

namespace {

// 127/8, ::1, and IPv4-mapped 127/8 (a dual-stack socket's view of 127.0.0.1).
bool is_loopback(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  }
  return address.is_loopback();
}

std::string url_authority(const tcp::endpoint& e) {
  const auto a = e.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(e.port());
}

}  // namespace

bool admin_listen_allowed(const asio::ip::address& address, bool has_token, std::string* why) {
  if (is_loopback(address) || has_token) {
    return true;
  }
  if (why != nullptr) {
    *why = "admin API on non-loopback address " + address.to_string() +
           " needs --admin-token (or listen on 127.0.0.1)";
  }
  return false;
}

bool admin_host_allowed(std::string_view host, const tcp::endpoint& listen) {
  host = trim(host);
  std::string_view name = host;
  std::string_view port;
  bool has_port = false;
  if (host.starts_with('[')) {
    const auto close = host.find(']');
    if (close == std::string_view::npos) {
      return false;
    }
    name = host.substr(1, close - 1);
    const std::string_view rest = host.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return false;
      }
      has_port = true;
      port = rest.substr(1);
    }
  } else if (const auto colon = host.find(':'); colon != std::string_view::npos) {
    name = host.substr(0, colon);
    port = host.substr(colon + 1);
    has_port = true;
  }
  if (has_port) {
    std::uint16_t n = 0;
    const auto r = std::from_chars(port.data(), port.data() + port.size(), n);
    if (port.empty() || r.ec != std::errc{} || r.ptr != port.data() + port.size() ||
        (listen.port() != 0 && n != listen.port())) {
      return false;
    }
  }
  if (!host.starts_with('[') && ascii::iequals(name, "localhost")) {
    return true;
  }
  // Strict literals only (inet_pton: no "127.1", no decimal forms; browsers send the
  // canonical form anyway). A bare IPv6 literal without brackets has several colons and
  // was refused above by the port parse.
  boost::system::error_code ec;
  asio::ip::address address;
  if (host.starts_with('[')) {
    address = asio::ip::make_address_v6(std::string(name), ec);
  } else {
    address = asio::ip::make_address_v4(std::string(name), ec);
  }
  return !ec && (is_loopback(address) || address == listen.address());
}

AdminAccess admin_access(const http::request_header<>& req, const AdminOptions& options) {
  const std::string_view target(req.target().data(), req.target().size());
  if (target.substr(0, target.find('?')) == "/healthz") {
    return AdminAccess::open;
  }
  if (!options.token.empty()) {
    return authorized(req, options.token) ? AdminAccess::granted : AdminAccess::unauthorized;
  }
  // A browser always sends Host, and a rebinding page can't change it: a request without one
  // (an HTTP/1.0 tool) is not that attack.
  const auto it = req.find(http::field::host);
  if (it == req.end()) {
    return AdminAccess::granted;
  }
  return admin_host_allowed(std::string_view(it->value().data(), it->value().size()),
                            options.listen)
             ? AdminAccess::granted
             : AdminAccess::misdirected;
}

AdminResponse handle_admin_request(const AdminRequest& req, AdminBackend& backend,
                                   const AdminOptions& options) {
  const std::string_view target(req.target().data(), req.target().size());
  const auto qmark = target.find('?');
  const std::string_view path = target.substr(0, qmark);
  const std::string_view query =
      qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1);

  // /healthz stays open for probes; everything else (even unknown paths, so route existence
  // doesn't leak) needs the token when one is set, or a Host naming us when none is.
  switch (admin_access(req, options)) {
    case AdminAccess::open:
      if (req.method() != http::verb::get) {
        return method_not_allowed(req, "GET");
      }
      return make_response(req, http::status::ok, "text/plain; charset=utf-8", "ok");
    case AdminAccess::unauthorized: {
      auto res = error_response(req, http::status::unauthorized, "missing or invalid bearer token");
      res.set(http::field::www_authenticate, "Bearer realm=\"snigate\"");
      return res;
    }
    case AdminAccess::misdirected: {
      // 421, not 403: the request is fine, it was sent to a name this server doesn't answer
      // for (a rebinding page's own name). The answer says both ways out.
      const auto host = req[http::field::host];
      return error_response(
          req, http::status::misdirected_request,
          "Host \"" + printable(std::string_view(host.data(), host.size()), 100) +
              "\" is not this admin API's address; without a token only localhost and loopback "
              "addresses are served (DNS rebinding protection): set --admin-token, or use http://" +
              url_authority(options.listen));
    }
    case AdminAccess::granted:
      break;
  }
  try {
    return route(req, backend, path, query);
  } catch (const std::exception& e) {
    if (options.log) {
      options.log->error("admin.backend_error path={} what={}", printable(path, 100), e.what());
    }
    return error_response(req, http::status::internal_server_error, "internal error");
  }
}

// ---- server ---------------------------------------------------------------------------------

namespace admin_detail {

using Clock = std::chrono::steady_clock;

// One connection. The stream is touched only on the connection's strand; the flags only under
// State::mutex.
struct Conn {
  Conn(tcp::socket socket, tcp::endpoint peer, std::uint64_t id)
      : fd(socket.native_handle()), stream(std::move(socket)), peer(std::move(peer)), id(id) {}

  /// Bytes the client has sent that we haven't read yet: a request on its way in. Asks the
  /// kernel through the descriptor number, not the socket object, which belongs to the
  /// connection's strand. Should the descriptor have just been closed (and even reused), the
  /// answer is only a worse choice of whom to push out, never a fault.
  bool has_unread_bytes() const {
    int n = 0;
    return ::ioctl(fd, FIONREAD, &n) == 0 && n > 0;
  }

  const int fd;
  beast::tcp_stream stream;
  const tcp::endpoint peer;
  const std::uint64_t id;
  const Clock::time_point accepted = Clock::now();
  bool evicted = false;     // closed by the server to make room
  bool authorized = false;  // kept alive after an authorised request (counted in `kept`)
  bool answering = false;   // a request read and being answered
};

}  // namespace admin_detail

struct AdminServer::State {
  using Conn = admin_detail::Conn;

  State(asio::io_context& ioc, AdminBackend& b, AdminOptions o)
      : ioc(ioc),
        strand(asio::make_strand(ioc)),
        acceptor(strand),
        backend(b),
        options(std::move(o)) {}

  /// Takes `c` into the connections without an authorised request; returns the one it
  /// pushes out, if any: when `c`'s IP is at its cap, that IP's oldest idle connection; when
  /// all are at the overall cap, the oldest idle one of any IP, else the oldest of all (that
  /// cap always holds). Idle: older than the grace, no request in (unread bytes, or being
  /// answered). Newest-wins, so a flood that holds connections open only recycles its own;
  /// the grace and the request check, because a flood arrives in bursts and a burst must not
  /// push out a client that has just connected and is sending its request.
  std::shared_ptr<Conn> admit(const std::shared_ptr<Conn>& c) {
    std::lock_guard lock(mutex);
    const auto& ip = c->peer.address();
    const auto old_enough = c->accepted - options.unauthorized_grace;
    const auto idle = [&](const Conn& w) {
      return w.accepted <= old_enough && !w.answering && !w.has_unread_bytes();
    };
    std::size_t same_ip = 0;
    for (const auto& w : waiting) {
      same_ip += w->peer.address() == ip ? 1 : 0;
    }
    auto drop = waiting.end();
    if (same_ip >= options.max_unauthorized_per_ip) {
      drop = oldest([&](const Conn& w) { return w.peer.address() == ip && idle(w); });
    }
    if (drop == waiting.end() && waiting.size() >= options.max_unauthorized) {
      drop = oldest(idle);
      if (drop == waiting.end()) {
        drop = waiting.begin();
      }
    }
    std::shared_ptr<Conn> victim;
    if (drop != waiting.end()) {
      victim = *drop;
      victim->evicted = true;
      waiting.erase(drop);
    }
    waiting.push_back(c);
    publish();
    return victim;
  }

  /// A request has been read (true) or answered (false).
  void answering(const std::shared_ptr<Conn>& c, bool on) {
    std::lock_guard lock(mutex);
    c->answering = on;
  }

  /// After an authorised request: moves `c` to the kept-alive set if there is room. False:
  /// answer and close (it stays among the waiting, so it can still be pushed out).
  bool promote(const std::shared_ptr<Conn>& c) {
    std::lock_guard lock(mutex);
    if (c->authorized) {
      return true;
    }
    if (c->evicted || kept >= options.max_connections) {
      return false;
    }
    waiting.remove(c);
    c->authorized = true;
    ++kept;
    publish();
    return true;
  }

  bool authorized(const std::shared_ptr<Conn>& c) {
    std::lock_guard lock(mutex);
    return c->authorized;
  }

  bool evicted(const std::shared_ptr<Conn>& c) {
    std::lock_guard lock(mutex);
    return c->evicted;
  }

  /// The connection has ended.
  void forget(const std::shared_ptr<Conn>& c) {
    std::lock_guard lock(mutex);
    if (c->authorized) {
      --kept;
    } else if (!c->evicted) {
      waiting.remove(c);
    }
    publish();
  }

  template <auto Member>
  void count() {
    if (options.stats) {
      ((*options.stats).*Member).fetch_add(1, std::memory_order_relaxed);
    }
  }

  asio::io_context& ioc;
  asio::strand<asio::io_context::executor_type> strand;  // owns the acceptor
  tcp::acceptor acceptor;
  AdminBackend& backend;
  AdminOptions options;  // listen() fills in `listen` before the first accept; const after
  std::atomic<bool> stopped{false};
  std::atomic<std::uint64_t> next_conn{0};
  /// Lines about refused connections are thinned like the TLS and SSH ports' (50 a second).
  PerSecondBudget log_budget{50};

 private:
  void publish() {  // under mutex
    if (options.stats) {
      options.stats->open_unauthorized.store(static_cast<std::int64_t>(waiting.size()));
      options.stats->open_authorized.store(static_cast<std::int64_t>(kept));
    }
  }

  /// The oldest waiting connection that `match` accepts (end() if none). Under mutex.
  template <class Match>
  std::list<std::shared_ptr<Conn>>::iterator oldest(const Match& match) {
    return std::find_if(waiting.begin(), waiting.end(), [&](const auto& w) { return match(*w); });
  }

  std::mutex mutex;
  std::list<std::shared_ptr<Conn>> waiting;  // no authorised request yet, oldest first
  std::size_t kept = 0;                      // authorized ones
};

namespace {

using State = AdminServer::State;
using admin_detail::Clock;
using admin_detail::Conn;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// After an error response we close; read and discard what the client is still sending (for at
// most a second) first, so closing with unread data doesn't RST away our response.
asio::awaitable<void> linger_close(beast::tcp_stream& stream) {
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.expires_after(std::chrono::seconds(1));
  std::array<char, 16 * 1024> sink{};
  std::size_t total = 0;
  while (total < 1024 * 1024) {
    auto [rec, n] = co_await stream.async_read_some(asio::buffer(sink), kTuple);
    if (rec) {
      break;
    }
    total += n;
  }
  stream.socket().close(ec);
}

asio::awaitable<void> serve_connection(std::shared_ptr<State> st, std::shared_ptr<Conn> c) {
  struct Leave {
    ~Leave() { st.forget(c); }
    State& st;
    const std::shared_ptr<Conn>& c;
  } leave{*st, c};
  const auto& opt = st->options;
  const auto& log = opt.log;
  const auto conn = c->id;
  const auto& peer = c->peer;
  auto& stream = c->stream;
  beast::error_code ec;
  beast::flat_buffer buffer;
  // Until its first authorised request a connection lives on this deadline, whatever it asks.
  const auto first_deadline = c->accepted + opt.unauthorized_timeout;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(opt.header_limit));
    parser.body_limit(opt.body_limit);
    const bool was_authorized = st->authorized(c);
    if (was_authorized) {
      stream.expires_after(opt.read_timeout);
    } else {
      stream.expires_at(std::min(first_deadline, Clock::now() + opt.read_timeout));
    }
    // The header decides whether the body is worth reading: a refused request's isn't.
    auto [rec, n] = co_await http::async_read_header(stream, buffer, parser, kTuple);
    (void)n;
    auto access = AdminAccess::unauthorized;
    bool answering = false;
    if (!rec) {
      access = admin_access(parser.get(), opt);
      if (access == AdminAccess::open || access == AdminAccess::granted) {
        answering = true;  // not to be pushed out now (a refused one may be)
        st->answering(c, true);
        std::tie(rec, n) = co_await http::async_read(stream, buffer, parser, kTuple);
      }
    }
    if (rec) {
      std::optional<AdminResponse> refusal;
      AdminRequest stub;  // the status line needs a version; the request may be unparsed
      stub.version(11);
      if (rec == http::error::body_limit) {
        refusal = error_response(stub, http::status::payload_too_large,
                                 "request body over " + std::to_string(opt.body_limit) + " bytes");
      } else if (rec == http::error::header_limit) {
        refusal =
            error_response(stub, http::status::request_header_fields_too_large,
                           "request header over " + std::to_string(opt.header_limit) + " bytes");
      } else if (rec.category() == http::make_error_code(http::error::bad_target).category() &&
                 rec != http::error::end_of_stream && rec != http::error::partial_message) {
        refusal = error_response(stub, http::status::bad_request, "malformed request");
      }
      if (st->evicted(c)) {
        if (log) {
          log->debug("admin.evicted conn=a{} peer={}", conn, peer.address().to_string());
        }
        co_return;  // counted (and logged, thinned) where it was pushed out
      }
      if (rec == beast::error::timeout && !was_authorized) {
        st->count<&AdminStats::timeout>();
      }
      if (log) {
        if (rec == beast::error::timeout) {
          log->debug("admin.timeout conn=a{} peer={} authorized={}", conn,
                     peer.address().to_string(), was_authorized);
        } else if (rec != http::error::end_of_stream) {
          log->debug("admin.read_error conn=a{} peer={} err={}", conn, peer.address().to_string(),
                     rec.message());
        }
      }
      if (refusal) {
        refusal->keep_alive(false);
        stream.expires_after(opt.read_timeout);
        co_await http::async_write(stream, *refusal, kTuple);
        co_await linger_close(stream);
      } else {
        stream.socket().shutdown(tcp::socket::shutdown_both, ec);
      }
      co_return;
    }

    const AdminRequest& req = parser.get();
    // Promoted before the answer is made, so /metrics doesn't count its own connection as one
    // without an authorised request.
    const bool room = access != AdminAccess::granted || st->promote(c);
    AdminResponse res = handle_admin_request(req, st->backend, opt);
    bool keep = req.keep_alive() && !st->stopped.load(std::memory_order_relaxed);
    switch (access) {
      case AdminAccess::unauthorized:
        st->count<&AdminStats::unauthorized>();
        keep = false;  // a refused client gets no second try on this connection
        break;
      case AdminAccess::misdirected:
        st->count<&AdminStats::bad_host>();
        keep = false;
        break;
      case AdminAccess::granted:
        keep = room && keep;
        break;
      case AdminAccess::open:
        break;  // /healthz on a waiting connection: still on its first deadline
    }
    res.keep_alive(keep);
    if (log) {
      const bool refused =
          access == AdminAccess::unauthorized || access == AdminAccess::misdirected;
      const auto level =
          req.method() == http::verb::delete_ ? spdlog::level::info : spdlog::level::debug;
      if (refused) {
        // Anyone on the host can cause these: thinned like the other ports' refusals.
        warn_thinned(*log, st->log_budget,
                     "admin.refuse conn=a{} peer={} method={} target={} status={}{}", conn,
                     peer.address().to_string(), printable(req.method_string(), 16),
                     printable(std::string_view(req.target().data(), req.target().size()), 100),
                     res.result_int());
      } else {
        log->log(level, "admin.request conn=a{} peer={} method={} target={} status={}", conn,
                 peer.address().to_string(), printable(req.method_string(), 16),
                 printable(std::string_view(req.target().data(), req.target().size()), 100),
                 res.result_int());
      }
    }
    stream.expires_after(opt.read_timeout);
    auto [wec, wn] = co_await http::async_write(stream, res, kTuple);
    (void)wn;
    if (answering) {
      st->answering(c, false);
    }
    if (wec) {
      stream.socket().shutdown(tcp::socket::shutdown_both, ec);
      co_return;
    }
    if (!keep) {
      if (access == AdminAccess::unauthorized || access == AdminAccess::misdirected) {
        co_await linger_close(stream);  // its body (if any) is unread
      } else {
        stream.socket().shutdown(tcp::socket::shutdown_send, ec);
      }
      co_return;
    }
  }
}

asio::awaitable<void> accept_loop(std::shared_ptr<State> st) {
  for (;;) {
    // Each connection gets its own strand: the io_context may run on several threads.
    auto [ec, socket] = co_await st->acceptor.async_accept(asio::make_strand(st->ioc), kTuple);
    if (st->stopped.load(std::memory_order_relaxed) || !st->acceptor.is_open()) {
      co_return;
    }
    if (ec) {
      // Out of descriptors and the like: log, back off, go on (never exit, never spin).
      if (st->options.log) {
        st->options.log->error("admin.accept_error err={}", ec.message());
      }
      asio::steady_timer timer(st->strand, std::chrono::milliseconds(100));
      co_await timer.async_wait(kTuple);
      continue;
    }
    beast::error_code pec;
    auto peer = socket.remote_endpoint(pec);
    if (pec) {
      continue;  // already gone
    }
    const auto id = st->next_conn.fetch_add(1, std::memory_order_relaxed) + 1;
    auto c = std::make_shared<Conn>(std::move(socket), std::move(peer), id);
    if (auto victim = st->admit(c)) {
      st->count<&AdminStats::limit>();
      if (st->options.log) {
        warn_thinned(*st->options.log, st->log_budget,
                     "admin.refuse conn=a{} peer={} reason=too_many_unauthorized (closed to make "
                     "room for a newer connection; {} per IP, {} in all, each gets {} ms to send "
                     "an authorised request){}",
                     victim->id, victim->peer.address().to_string(),
                     st->options.max_unauthorized_per_ip, st->options.max_unauthorized,
                     st->options.unauthorized_timeout.count());
      }
      asio::post(victim->stream.get_executor(), [victim] { victim->stream.close(); });
    }
    auto executor = c->stream.get_executor();
    asio::co_spawn(executor, serve_connection(st, std::move(c)), asio::detached);
  }
}

}  // namespace

AdminServer::AdminServer(asio::io_context& ioc, AdminBackend& backend, AdminOptions options)
    : state_(std::make_shared<State>(ioc, backend, std::move(options))) {}

AdminServer::~AdminServer() { stop(); }

void AdminServer::listen(const tcp::endpoint& where) {
  auto& a = state_->acceptor;
  a.open(where.protocol());
  a.set_option(tcp::acceptor::reuse_address(true));
  if (where.address().is_v6()) {
    a.set_option(asio::ip::v6_only(true));
  }
  a.bind(where);
  a.listen(asio::socket_base::max_listen_connections);
  local_ = a.local_endpoint();
  state_->options.listen = local_;  // before any connection can read it
  asio::co_spawn(state_->strand, accept_loop(state_), asio::detached);
}

void AdminServer::stop() {
  if (state_->stopped.exchange(true)) {
    return;
  }
  // The acceptor belongs to the strand; close it there.
  asio::dispatch(state_->strand, [st = state_] {
    beast::error_code ec;
    st->acceptor.close(ec);
  });
}

}  // namespace gw::app

// Admin HTTP server: routing (handle_admin_request) and the bounded Beast connection loop.
// See admin_http.hpp; the JSON shapes are docs/api.md.
#include "app/admin_http.hpp"

#include <spdlog/spdlog.h>

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
#include <optional>

#include "app/event_log.hpp"  // rfc3339
#include "app/json.hpp"
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
  return JsonObject()
      .str("id", e.id)
      .str("url", e.url)
      .str("proto", e.proto)
      .str("created_at", e.created_at)
      .boolean("pool", e.pool)
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

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

bool authorized(const AdminRequest& req, std::string_view token) {
  const auto it = req.find(http::field::authorization);
  if (it == req.end()) {
    return false;
  }
  const std::string_view value = trim(std::string_view(it->value().data(), it->value().size()));
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() || !iequals(value.substr(0, kScheme.size()), kScheme)) {
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

// application/x-www-form-urlencoded decoding; a bad %-escape is kept literally.
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

bool admin_listen_allowed(const asio::ip::address& address, bool has_token, std::string* why) {
  bool loopback = address.is_loopback();
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    loopback = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  }
  if (loopback || has_token) {
    return true;
  }
  if (why != nullptr) {
    *why = "admin API on non-loopback address " + address.to_string() +
           " needs --admin-token (or listen on 127.0.0.1)";
  }
  return false;
}

AdminResponse handle_admin_request(const AdminRequest& req, AdminBackend& backend,
                                   const AdminOptions& options) {
  const std::string_view target(req.target().data(), req.target().size());
  const auto qmark = target.find('?');
  const std::string_view path = target.substr(0, qmark);
  const std::string_view query =
      qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1);

  // /healthz stays open for probes; everything else (even unknown paths, so route existence
  // doesn't leak) needs the token when one is set.
  if (path == "/healthz") {
    if (req.method() != http::verb::get) {
      return method_not_allowed(req, "GET");
    }
    return make_response(req, http::status::ok, "text/plain; charset=utf-8", "ok");
  }
  if (!options.token.empty() && !authorized(req, options.token)) {
    auto res = error_response(req, http::status::unauthorized, "missing or invalid bearer token");
    res.set(http::field::www_authenticate, "Bearer realm=\"snigate\"");
    return res;
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

struct AdminServer::State {
  State(asio::io_context& ioc, AdminBackend& b, AdminOptions o)
      : ioc(ioc),
        strand(asio::make_strand(ioc)),
        acceptor(strand),
        backend(b),
        options(std::move(o)) {}

  asio::io_context& ioc;
  asio::strand<asio::io_context::executor_type> strand;  // owns the acceptor
  tcp::acceptor acceptor;
  AdminBackend& backend;
  const AdminOptions options;
  std::atomic<bool> stopped{false};
  std::atomic<std::size_t> active{0};
  std::atomic<std::uint64_t> next_conn{0};
};

namespace {

using State = AdminServer::State;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Holds one slot of max_connections for as long as the connection lives.
struct Slot {
  explicit Slot(State& s) : state(s) {}
  ~Slot() { state.active.fetch_sub(1, std::memory_order_relaxed); }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  State& state;
};

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

asio::awaitable<void> serve_connection(std::shared_ptr<State> st, tcp::socket socket,
                                       std::uint64_t conn) {
  Slot slot(*st);
  const auto& opt = st->options;
  const auto& log = opt.log;
  beast::error_code ec;
  const auto peer = socket.remote_endpoint(ec);
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(opt.header_limit));
    parser.body_limit(opt.body_limit);
    stream.expires_after(opt.read_timeout);
    auto [rec, n] = co_await http::async_read(stream, buffer, parser, kTuple);
    (void)n;
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
      if (log) {
        if (rec == beast::error::timeout) {
          log->debug("admin.timeout conn=a{} peer={}", conn, peer.address().to_string());
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
    AdminResponse res = handle_admin_request(req, st->backend, opt);
    const bool keep = req.keep_alive() && !st->stopped.load(std::memory_order_relaxed);
    res.keep_alive(keep);
    if (log) {
      const auto level =
          req.method() == http::verb::delete_ ? spdlog::level::info : spdlog::level::debug;
      log->log(level, "admin.request conn=a{} peer={} method={} target={} status={}", conn,
               peer.address().to_string(), printable(req.method_string(), 16),
               printable(std::string_view(req.target().data(), req.target().size()), 100),
               res.result_int());
    }
    stream.expires_after(opt.read_timeout);
    auto [wec, wn] = co_await http::async_write(stream, res, kTuple);
    (void)wn;
    if (wec || !keep) {
      stream.socket().shutdown(tcp::socket::shutdown_send, ec);
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
    const auto conn = st->next_conn.fetch_add(1, std::memory_order_relaxed) + 1;
    if (st->active.fetch_add(1, std::memory_order_relaxed) >= st->options.max_connections) {
      st->active.fetch_sub(1, std::memory_order_relaxed);
      if (st->options.log) {
        st->options.log->warn("admin.refuse conn=a{} reason=too_many_connections", conn);
      }
      beast::error_code ignored;
      socket.close(ignored);
      continue;
    }
    auto executor = socket.get_executor();
    asio::co_spawn(executor, serve_connection(st, std::move(socket), conn), asio::detached);
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

// Unit tests for the admin API's routing, without sockets: handle_admin_request() against a
// fake backend (every route, JSON shapes, 401/404/405/500 shapes, session ids, the close
// message), token_equal(), admin_listen_allowed(), and the Host check against DNS rebinding
// (admin_host_allowed(), admin_access(), the 421 answer). The socket-level behaviour (limits,
// timeouts, keep-alive) is in admin_http_test.cpp (integration).
#include <gtest/gtest.h>

#include <boost/asio/ip/address.hpp>
#include <boost/json.hpp>  // compiled once in event_log_test.cpp

#include "app/admin_http.hpp"
#include "tests/unit/app/fake_admin_backend.hpp"

namespace gw::app {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;

class AdminHandler : public ::testing::Test {
 protected:
  AdminResponse call(http::verb method, std::string target, std::string auth = "",
                     std::string body = "") {
    AdminRequest req{method, target, 11};
    if (!auth.empty()) {
      req.set(http::field::authorization, auth);
    }
    req.body() = std::move(body);
    req.prepare_payload();
    return handle_admin_request(req, backend, options);
  }
  AdminResponse get(std::string target, std::string auth = "") {
    return call(http::verb::get, std::move(target), std::move(auth));
  }
  static json::object body_json(const AdminResponse& res) {
    EXPECT_EQ(res[http::field::content_type], "application/json");
    return json::parse(res.body()).as_object();
  }
  // The documented error shape: {"error":{"status":N,"message":"..."}}.
  static void expect_error(const AdminResponse& res, unsigned status) {
    EXPECT_EQ(res.result_int(), status);
    const auto v = body_json(res);
    ASSERT_EQ(v.size(), 1u);
    const auto& err = v.at("error").as_object();
    EXPECT_EQ(err.at("status").as_int64(), status);
    EXPECT_TRUE(err.at("message").is_string());
    EXPECT_FALSE(err.at("message").as_string().empty());
  }

  testing::FakeAdminBackend backend;
  AdminOptions options;
};

TEST_F(AdminHandler, Healthz) {
  const auto res = get("/healthz");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res.body(), "ok");
  EXPECT_EQ(res[http::field::content_type], "text/plain; charset=utf-8");
}

TEST_F(AdminHandler, Metrics) {
  const auto res = get("/metrics");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res[http::field::content_type], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(res.body(), backend.metrics_text());
}

// The list shape, field by field, as docs/api.md shows it.
TEST_F(AdminHandler, ListEndpoints) {
  const auto res = get("/api/endpoints");
  ASSERT_EQ(res.result(), http::status::ok);
  const auto v = body_json(res);
  const auto& list = v.at("endpoints").as_array();
  ASSERT_EQ(list.size(), 2u);
  const auto& e = list[0].as_object();
  EXPECT_EQ(e.at("id"), "ep_12");
  EXPECT_EQ(e.at("url"), "tls://app.example.com");
  EXPECT_EQ(e.at("proto"), "tls");
  EXPECT_EQ(e.at("created_at"), "2024-05-01T12:00:00.000000Z");
  EXPECT_EQ(e.at("pool"), false);
  EXPECT_EQ(e.at("session_id").as_int64(), 17);
  EXPECT_EQ(e.at("key_fingerprint"), "SHA256:abc");
  EXPECT_EQ(e.at("key_name"), "alice@laptop");
  EXPECT_EQ(e.at("client_addr"), "192.0.2.4:50022");
  EXPECT_EQ(e.at("open_connections").as_int64(), 2);
  EXPECT_EQ(e.at("bytes_in").as_int64(), 100);
  EXPECT_EQ(e.at("bytes_out").as_int64(), 200);
  EXPECT_EQ(e.at("binding"), "public");
  EXPECT_EQ(e.size(), 13u);
  EXPECT_EQ(list[1].at("pool"), true);
}

TEST_F(AdminHandler, GetOneEndpoint) {
  auto res = get("/api/endpoints/ep_13");
  ASSERT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(body_json(res).at("url"), "tls://api.example.com:8443");
  expect_error(get("/api/endpoints/ep_99"), 404);
}

TEST_F(AdminHandler, ListSessions) {
  const auto res = get("/api/sessions");
  ASSERT_EQ(res.result(), http::status::ok);
  const auto v = body_json(res);
  const auto& list = v.at("sessions").as_array();
  ASSERT_EQ(list.size(), 1u);
  const auto& s = list[0].as_object();
  EXPECT_EQ(s.at("id").as_int64(), 17);
  EXPECT_EQ(s.at("client_addr"), "192.0.2.4:50022");
  EXPECT_EQ(s.at("user"), "alice");
  EXPECT_EQ(s.at("key_fingerprint"), "SHA256:abc");
  EXPECT_EQ(s.at("key_name"), "alice@laptop");
  EXPECT_EQ(s.at("started_at"), "2024-05-01T11:59:59.000000Z");
  ASSERT_EQ(s.at("endpoint_urls").as_array().size(), 2u);
  EXPECT_EQ(s.at("endpoint_urls").as_array()[1], "tls://api.example.com:8443");
  EXPECT_EQ(s.at("open_connections").as_int64(), 2);
  EXPECT_EQ(s.at("state"), "active");
  EXPECT_EQ(s.size(), 9u);
}

// GET /api/sessions/{id} accepts "17" and the log spelling "s17".
TEST_F(AdminHandler, GetOneSession) {
  EXPECT_EQ(get("/api/sessions/17").result(), http::status::ok);
  EXPECT_EQ(body_json(get("/api/sessions/s17")).at("user"), "alice");
  expect_error(get("/api/sessions/18"), 404);
  expect_error(get("/api/sessions/abc"), 404);
  expect_error(get("/api/sessions/99999999999999999999999"), 404);
}

// DELETE ends the session: 204 and the default message; unknown ids are 404.
TEST_F(AdminHandler, DeleteSession) {
  const auto res = call(http::verb::delete_, "/api/sessions/17");
  EXPECT_EQ(res.result(), http::status::no_content);
  EXPECT_TRUE(res.body().empty());
  expect_error(call(http::verb::delete_, "/api/sessions/18"), 404);
  expect_error(call(http::verb::delete_, "/api/sessions/x"), 404);
  const auto closed = backend.closed();
  ASSERT_EQ(closed.size(), 2u);  // "x" never reaches the backend
  EXPECT_EQ(closed[0].first, 17u);
  EXPECT_EQ(closed[0].second, "session closed by the gateway administrator");
}

// The message to the user comes from ?message= or the body, stripped of control bytes and cut
// to 256 bytes.
TEST_F(AdminHandler, DeleteSessionMessage) {
  call(http::verb::delete_, "/api/sessions/17?message=back%20in%205+min");
  call(http::verb::delete_, "/api/sessions/s17", "", "maintenance\x1b[2J\r\nnow");
  call(http::verb::delete_, "/api/sessions/17", "", std::string(1000, 'm'));
  const auto closed = backend.closed();
  ASSERT_EQ(closed.size(), 3u);
  EXPECT_EQ(closed[0].second, "back in 5 min");
  EXPECT_EQ(closed[1].second, "maintenance [2J  now");
  EXPECT_EQ(closed[2].second, std::string(256, 'm'));
}

TEST_F(AdminHandler, UnknownPathIs404) {
  expect_error(get("/"), 404);
  expect_error(get("/api"), 404);
  expect_error(get("/api/endpoints/"), 404);
  expect_error(get("/metricsx"), 404);
}

// Wrong method: 405 with the Allow header naming the right ones.
TEST_F(AdminHandler, WrongMethodIs405WithAllow) {
  auto res = call(http::verb::post, "/api/endpoints");
  expect_error(res, 405);
  EXPECT_EQ(res[http::field::allow], "GET");
  res = call(http::verb::put, "/api/sessions/17");
  expect_error(res, 405);
  EXPECT_EQ(res[http::field::allow], "GET, DELETE");
  res = call(http::verb::delete_, "/healthz");
  EXPECT_EQ(res[http::field::allow], "GET");
  expect_error(call(http::verb::delete_, "/metrics"), 405);
  expect_error(call(http::verb::post, "/api/endpoints/ep_12"), 405);
}

// With a token: missing and wrong get 401 + WWW-Authenticate, even for unknown paths;
// the right one (scheme case-insensitive) passes; /healthz stays open.
TEST_F(AdminHandler, TokenEnforced) {
  options.token = "s3cret-token";
  for (const char* auth : {"", "Bearer wrong", "Bearer s3cret-toke", "Bearer s3cret-token2",
                           "Basic czNjcmV0LXRva2Vu", "s3cret-token", "Bearer"}) {
    SCOPED_TRACE(auth);
    for (const char* target : {"/api/endpoints", "/api/sessions", "/metrics", "/nope"}) {
      const auto res = get(target, auth);
      expect_error(res, 401);
      EXPECT_EQ(res[http::field::www_authenticate], "Bearer realm=\"snigate\"");
    }
    expect_error(call(http::verb::delete_, "/api/sessions/17", auth), 401);
  }
  EXPECT_TRUE(backend.closed().empty());
  EXPECT_EQ(get("/api/endpoints", "Bearer s3cret-token").result(), http::status::ok);
  EXPECT_EQ(get("/metrics", "bearer  s3cret-token ").result(), http::status::ok);
  EXPECT_EQ(get("/healthz").result(), http::status::ok);
}

// A throwing backend gives a JSON 500, not a dropped connection.
TEST_F(AdminHandler, BackendFailureIs500) {
  backend.fail = true;
  expect_error(get("/api/endpoints"), 500);
  expect_error(get("/metrics"), 500);
}

TEST(TokenEqual, ComparesExactly) {
  EXPECT_TRUE(token_equal("abc", "abc"));
  EXPECT_FALSE(token_equal("abd", "abc"));
  EXPECT_FALSE(token_equal("ab", "abc"));
  EXPECT_FALSE(token_equal("abcd", "abc"));
  EXPECT_FALSE(token_equal("", "abc"));
  EXPECT_FALSE(token_equal(std::string("abc\0", 4), "abc"));
  EXPECT_TRUE(token_equal("", ""));
}

// Loopback is always allowed; anything else only with a token, and the refusal says why.
TEST(AdminListenAllowed, LoopbackOrToken) {
  const auto addr = [](const char* s) { return boost::asio::ip::make_address(s); };
  std::string why;
  for (const char* ok : {"127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(admin_listen_allowed(addr(ok), false, &why)) << ok;
  }
  for (const char* bad : {"0.0.0.0", "::", "192.0.2.1", "10.0.0.1", "::ffff:10.0.0.1"}) {
    why.clear();
    EXPECT_FALSE(admin_listen_allowed(addr(bad), false, &why)) << bad;
    EXPECT_NE(why.find("--admin-token"), std::string::npos) << why;
    EXPECT_TRUE(admin_listen_allowed(addr(bad), true, nullptr)) << bad;
  }
  EXPECT_FALSE(admin_listen_allowed(addr("0.0.0.0"), false, nullptr));  // null why is fine
}

// The Host check (no token): localhost and loopback literals, with no port or the listen
// port, pass; every other name (a rebinding page's), a wrong port, or a malformed value fails.
TEST(AdminHostAllowed, LoopbackNamesOnly) {
  const boost::asio::ip::tcp::endpoint v4{boost::asio::ip::make_address("127.0.0.1"), 9090};
  struct Case {
    const char* what;
    const char* host;
    bool ok;
  };
  const Case cases[] = {
      {"ip and port", "127.0.0.1:9090", true},
      {"ip alone", "127.0.0.1", true},
      {"other loopback ip", "127.0.0.2:9090", true},
      {"localhost", "localhost", true},
      {"localhost with port", "localhost:9090", true},
      {"localhost any case", "LocalHost:9090", true},
      {"ipv6 loopback", "[::1]", true},
      {"ipv6 loopback with port", "[::1]:9090", true},
      {"ipv4-mapped loopback", "[::ffff:127.0.0.1]:9090", true},
      {"surrounding blanks", " 127.0.0.1:9090 ", true},
      {"rebinding name", "evil.example.com", false},
      {"rebinding name with port", "evil.example.com:9090", false},
      {"name under localhost", "app.localhost:9090", false},
      {"localhost trailing dot", "localhost.", false},
      {"localhost prefix", "localhost.evil.com", false},
      {"wrong port", "127.0.0.1:80", false},
      {"wrong port on localhost", "localhost:9091", false},
      {"empty port", "127.0.0.1:", false},
      {"port not a number", "127.0.0.1:90x", false},
      {"port too big", "127.0.0.1:79090", false},
      {"non-loopback ip", "192.0.2.1:9090", false},
      {"short ipv4 form", "127.1:9090", false},
      {"decimal ipv4 form", "2130706433", false},
      {"ipv6 without brackets", "::1", false},
      {"ipv6 not loopback", "[2001:db8::1]:9090", false},
      {"ipv4 in brackets", "[127.0.0.1]:9090", false},
      {"unclosed bracket", "[::1:9090", false},
      {"junk after bracket", "[::1]x", false},
      {"empty", "", false},
      {"userinfo", "user@127.0.0.1:9090", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(admin_host_allowed(c.host, v4), c.ok) << c.what << ": " << c.host;
  }
  // Port 0 (not yet bound, or unknown): any port. The listen address itself always passes.
  EXPECT_TRUE(
      admin_host_allowed("127.0.0.1:1234", {boost::asio::ip::make_address("127.0.0.1"), 0}));
  const boost::asio::ip::tcp::endpoint v6{boost::asio::ip::make_address("::1"), 9090};
  EXPECT_TRUE(admin_host_allowed("[::1]:9090", v6));
  EXPECT_FALSE(admin_host_allowed("[::1]:9091", v6));
  const boost::asio::ip::tcp::endpoint lan{boost::asio::ip::make_address("192.0.2.7"), 9090};
  EXPECT_TRUE(admin_host_allowed("192.0.2.7:9090", lan));
  EXPECT_FALSE(admin_host_allowed("192.0.2.8:9090", lan));
}

// Without a token a Host that doesn't name us gets 421 with JSON saying both ways out, for
// every route but /healthz; a missing Host (non-browser tools) is served; with a token, any
// Host is fine.
TEST_F(AdminHandler, ForeignHostIs421WithoutToken) {
  options.listen = {boost::asio::ip::make_address("127.0.0.1"), 9090};
  const auto with_host = [&](const char* target, const char* host, const char* auth = "") {
    AdminRequest req{http::verb::get, target, 11};
    req.set(http::field::host, host);
    if (*auth != '\0') {
      req.set(http::field::authorization, auth);
    }
    req.prepare_payload();
    EXPECT_EQ(admin_access(req, options) == AdminAccess::misdirected,
              handle_admin_request(req, backend, options).result_int() == 421);
    return handle_admin_request(req, backend, options);
  };
  for (const char* target : {"/api/sessions", "/api/endpoints", "/metrics", "/nope"}) {
    SCOPED_TRACE(target);
    const auto res = with_host(target, "rebind.attacker.example:9090");
    expect_error(res, 421);
    const std::string message(body_json(res).at("error").at("message").as_string());
    EXPECT_NE(message.find("set --admin-token, or use http://127.0.0.1:9090"), std::string::npos)
        << message;
    EXPECT_NE(message.find("rebind.attacker.example"), std::string::npos) << message;
  }
  EXPECT_EQ(with_host("/healthz", "rebind.attacker.example").result(), http::status::ok);
  EXPECT_EQ(with_host("/api/sessions", "127.0.0.1:9090").result(), http::status::ok);
  EXPECT_EQ(with_host("/api/sessions", "localhost").result(), http::status::ok);
  EXPECT_EQ(get("/api/sessions").result(), http::status::ok);  // no Host header at all
  // A peer-chosen Host is escaped in the message, which stays valid JSON.
  expect_error(with_host("/api/sessions", "a\"b\\c\x01"), 421);
  options.token = "t";
  EXPECT_EQ(with_host("/api/sessions", "rebind.attacker.example", "Bearer t").result(),
            http::status::ok);
  EXPECT_EQ(admin_access(AdminRequest{http::verb::get, "/api/sessions", 11}, options),
            AdminAccess::unauthorized);
}

}  // namespace
}  // namespace gw::app

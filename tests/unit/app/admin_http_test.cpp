// Integration tests for the admin HTTP server: a real AdminServer on 127.0.0.1:0 in-process,
// driven by Beast's HTTP client over TCP. Proves every route answers over the wire with
// keep-alive, the token is enforced, error shapes survive the wire, and each connection is
// bounded: a stalled client is cut at the read timeout, an oversized body gets 413, oversized
// headers 431, garbage 400, and stop() stops accepting. And that connections without an
// authorised request can't starve anyone: a refusal (401, 421) closes, they are capped per IP
// and in all with the newest pushing out the oldest, and they get a short first deadline.
// Labelled `integration` (own binary): it opens sockets.
#include "app/admin_http.hpp"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/src.hpp>  // this binary's one Boost.JSON TU
#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "tests/unit/app/fake_admin_backend.hpp"

namespace gw::app {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class AdminHttp : public ::testing::Test {
 protected:
  void start(AdminOptions opts = {}) {
    server_.emplace(ioc_, backend_, std::move(opts));
    server_->listen({asio::ip::make_address("127.0.0.1"), 0});
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void TearDown() override {
    if (server_) {
      server_->stop();
    }
    work_.reset();
    ioc_.stop();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

  tcp::socket connect(const char* source = nullptr) {
    tcp::socket s(client_ioc_);
    if (source != nullptr) {  // 127.0.0.0/8 is all ours: other client IPs without a network
      s.open(tcp::v4());
      s.bind({asio::ip::make_address(source), 0});
    }
    s.connect(server_->local_endpoint());
    return s;
  }

  // One request on an existing connection; returns the response.
  static http::response<http::string_body> roundtrip(tcp::socket& s, http::verb method,
                                                     std::string target, std::string auth = "",
                                                     std::string body = "") {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (!auth.empty()) {
      req.set(http::field::authorization, auth);
    }
    req.body() = std::move(body);
    req.prepare_payload();
    http::write(s, req);
    boost::beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(s, buf, res);
    return res;
  }

  http::response<http::string_body> once(http::verb method, std::string target,
                                         std::string auth = "") {
    auto s = connect();
    return roundtrip(s, method, std::move(target), std::move(auth));
  }

  // Reads until the server closes; returns how long that took and what arrived.
  static std::pair<Clock::duration, std::string> read_until_closed(tcp::socket& s) {
    const auto t0 = Clock::now();
    std::string got;
    boost::system::error_code ec;
    char buf[4096];
    for (;;) {
      const auto n = s.read_some(asio::buffer(buf), ec);
      if (ec) {
        break;
      }
      got.append(buf, n);
    }
    return {Clock::now() - t0, got};
  }

  static void expect_error_json(const http::response<http::string_body>& res, unsigned status) {
    EXPECT_EQ(res.result_int(), status);
    EXPECT_EQ(res[http::field::content_type], "application/json");
    const auto v = json::parse(res.body());
    EXPECT_EQ(v.at("error").at("status").as_int64(), status);
    EXPECT_TRUE(v.at("error").at("message").is_string());
  }

  asio::io_context ioc_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      asio::make_work_guard(ioc_)};
  asio::io_context client_ioc_;
  testing::FakeAdminBackend backend_;
  std::optional<AdminServer> server_;
  std::thread thread_;
};

// Every route over one keep-alive connection.
TEST_F(AdminHttp, EveryRouteOverKeepAlive) {
  start();
  auto s = connect();
  auto res = roundtrip(s, http::verb::get, "/healthz");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res.body(), "ok");
  EXPECT_TRUE(res.keep_alive());
  res = roundtrip(s, http::verb::get, "/metrics");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res[http::field::content_type], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(res.body().find("snigate_sessions 1"), std::string::npos);
  res = roundtrip(s, http::verb::get, "/api/endpoints");
  EXPECT_EQ(json::parse(res.body()).at("endpoints").as_array().size(), 2u);
  res = roundtrip(s, http::verb::get, "/api/endpoints/ep_12");
  EXPECT_EQ(json::parse(res.body()).at("url"), "tls://app.example.com");
  res = roundtrip(s, http::verb::get, "/api/sessions");
  EXPECT_EQ(json::parse(res.body()).at("sessions").as_array()[0].at("id").as_int64(), 17);
  res = roundtrip(s, http::verb::get, "/api/sessions/s17");
  EXPECT_EQ(res.result(), http::status::ok);
  res = roundtrip(s, http::verb::delete_, "/api/sessions/17?message=bye");
  EXPECT_EQ(res.result(), http::status::no_content);
  ASSERT_EQ(backend_.closed().size(), 1u);
  EXPECT_EQ(backend_.closed()[0].second, "bye");
  expect_error_json(roundtrip(s, http::verb::delete_, "/api/sessions/99"), 404);
  expect_error_json(roundtrip(s, http::verb::get, "/nope"), 404);
  res = roundtrip(s, http::verb::post, "/api/sessions");
  expect_error_json(res, 405);
  EXPECT_EQ(res[http::field::allow], "GET");
  EXPECT_EQ(roundtrip(s, http::verb::get, "/healthz").result(), http::status::ok);  // still open
}

// Token: missing and wrong are 401 with WWW-Authenticate; right passes; /healthz is open.
TEST_F(AdminHttp, TokenEnforced) {
  AdminOptions opts;
  opts.token = "t0ken";
  start(opts);
  auto res = once(http::verb::get, "/api/sessions");
  expect_error_json(res, 401);
  EXPECT_EQ(res[http::field::www_authenticate], "Bearer realm=\"snigate\"");
  expect_error_json(once(http::verb::get, "/api/sessions", "Bearer t0ke"), 401);
  expect_error_json(once(http::verb::delete_, "/api/sessions/17", "Bearer wrong"), 401);
  EXPECT_TRUE(backend_.closed().empty());
  EXPECT_EQ(once(http::verb::get, "/api/sessions", "Bearer t0ken").result(), http::status::ok);
  EXPECT_EQ(once(http::verb::get, "/metrics", "Bearer t0ken").result(), http::status::ok);
  EXPECT_EQ(once(http::verb::get, "/healthz").result(), http::status::ok);
}

// A client that sends half a request and stalls is disconnected at the read timeout, and so
// is an idle keep-alive connection.
TEST_F(AdminHttp, SlowClientTimesOut) {
  AdminOptions opts;
  opts.read_timeout = 200ms;
  start(opts);
  auto s = connect();
  asio::write(s, asio::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\n")));
  auto [took, got] = read_until_closed(s);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 2s);
  EXPECT_TRUE(got.empty()) << got;

  auto idle = connect();
  EXPECT_EQ(roundtrip(idle, http::verb::get, "/healthz").result(), http::status::ok);
  std::tie(took, got) = read_until_closed(idle);
  EXPECT_LT(took, 2s);
}

// A body over 64 KiB is refused with 413 (JSON) and the connection closed.
TEST_F(AdminHttp, OversizedBodyIs413) {
  start();
  auto s = connect();
  http::request<http::string_body> req{http::verb::delete_, "/api/sessions/17", 11};
  req.set(http::field::host, "x");
  req.body() = std::string(100 * 1024, 'm');
  req.prepare_payload();
  boost::system::error_code ec;
  http::write(s, req, ec);  // the server may stop reading early; that is fine
  boost::beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(s, buf, res, ec);
  ASSERT_FALSE(ec) << ec.message();
  expect_error_json(res, 413);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_TRUE(backend_.closed().empty());
  // A body at the limit is fine.
  auto ok = connect();
  EXPECT_EQ(roundtrip(ok, http::verb::delete_, "/api/sessions/17", "", std::string(64 * 1024, 'm'))
                .result(),
            http::status::no_content);
}

// Headers over the limit get 431; garbage gets 400.
TEST_F(AdminHttp, OversizedHeaderAndGarbage) {
  start();
  auto s = connect();
  const std::string big =
      "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(16 * 1024, 'a') + "\r\n\r\n";
  boost::system::error_code ec;
  asio::write(s, asio::buffer(big), ec);
  auto [took, got] = read_until_closed(s);
  EXPECT_EQ(got.rfind("HTTP/1.1 431", 0), 0u) << got.substr(0, 80);

  auto g = connect();
  asio::write(g, asio::buffer(std::string("HELLO\x01 WORLD\r\n\r\n")));
  std::tie(took, got) = read_until_closed(g);
  EXPECT_EQ(got.rfind("HTTP/1.1 400", 0), 0u) << got.substr(0, 80);
  EXPECT_NE(got.find("\"status\":400"), std::string::npos);
}

// A 401 closes the connection (Connection: close), so a client without the token can't keep
// a slot by asking again and again; the right token keeps it alive.
TEST_F(AdminHttp, RefusalClosesTheConnection) {
  AdminOptions opts;
  opts.token = "t0ken";
  opts.stats = std::make_shared<AdminStats>();
  start(opts);
  auto s = connect();
  const auto res = roundtrip(s, http::verb::get, "/metrics");
  expect_error_json(res, 401);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_EQ(res[http::field::connection], "close");
  auto [took, got] = read_until_closed(s);
  EXPECT_TRUE(got.empty()) << got;
  EXPECT_LT(took, 2s);
  EXPECT_EQ(opts.stats->unauthorized.load(), 1u);
  auto ok = connect();
  EXPECT_TRUE(roundtrip(ok, http::verb::get, "/metrics", "Bearer t0ken").keep_alive());
  EXPECT_EQ(roundtrip(ok, http::verb::get, "/api/sessions", "Bearer t0ken").result(),
            http::status::ok);
}

// Without a token, a Host that doesn't name the server gets 421 and a close, over the wire.
TEST_F(AdminHttp, ForeignHostIs421AndCloses) {
  AdminOptions opts;
  opts.stats = std::make_shared<AdminStats>();
  start(opts);
  auto s = connect();
  http::request<http::string_body> req{http::verb::get, "/api/sessions", 11};
  req.set(http::field::host,
          "rebind.attacker.example:" + std::to_string(server_->local_endpoint().port()));
  http::write(s, req);
  boost::beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(s, buf, res);
  expect_error_json(res, 421);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_EQ(opts.stats->bad_host.load(), 1u);
  auto [took, got] = read_until_closed(s);
  EXPECT_LT(took, 2s);
  auto ok = connect();  // roundtrip() sends Host: 127.0.0.1
  EXPECT_EQ(roundtrip(ok, http::verb::get, "/api/sessions").result(), http::status::ok);
}

// Past the per-IP cap of connections without an authorised request, the newest one is served
// and the oldest of that IP is closed; other IPs' connections are not touched.
TEST_F(AdminHttp, NewestPushesOutOldestOfItsIp) {
  AdminOptions opts;
  opts.token = "t0ken";
  opts.max_unauthorized_per_ip = 2;
  opts.unauthorized_grace = 0ms;
  opts.stats = std::make_shared<AdminStats>();
  start(opts);
  auto other = connect("127.0.0.2");
  auto a = connect();
  auto b = connect();
  auto c = connect();  // pushes out a
  EXPECT_EQ(roundtrip(c, http::verb::get, "/healthz").result(), http::status::ok);
  auto [took, got] = read_until_closed(a);
  EXPECT_TRUE(got.empty());
  EXPECT_LT(took, 2s);
  EXPECT_EQ(roundtrip(b, http::verb::get, "/metrics", "Bearer t0ken").result(), http::status::ok);
  EXPECT_EQ(roundtrip(other, http::verb::get, "/healthz").result(), http::status::ok);
  EXPECT_EQ(opts.stats->limit.load(), 1u);
  // b is authorised now, so it no longer counts: two more from 127.0.0.1 push out nobody
  // but c.
  auto d = connect();
  auto e = connect();
  EXPECT_EQ(roundtrip(e, http::verb::get, "/healthz").result(), http::status::ok);
  std::tie(took, got) = read_until_closed(c);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(roundtrip(b, http::verb::get, "/metrics", "Bearer t0ken").result(), http::status::ok);
  EXPECT_EQ(roundtrip(d, http::verb::get, "/healthz").result(), http::status::ok);
  EXPECT_EQ(opts.stats->limit.load(), 2u);
}

// Past the overall cap, the oldest connection of any IP is closed for the newest.
TEST_F(AdminHttp, NewestPushesOutOldestOverall) {
  AdminOptions opts;
  opts.max_unauthorized = 2;
  opts.unauthorized_grace = 0ms;
  opts.stats = std::make_shared<AdminStats>();
  start(opts);
  auto a = connect("127.0.0.2");
  auto b = connect("127.0.0.3");
  auto c = connect("127.0.0.4");
  EXPECT_EQ(roundtrip(c, http::verb::get, "/healthz").result(), http::status::ok);
  auto [took, got] = read_until_closed(a);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(roundtrip(b, http::verb::get, "/healthz").result(), http::status::ok);
  EXPECT_EQ(opts.stats->limit.load(), 1u);
}

// Connections younger than the grace are not pushed out by a burst: the IP's cap yields
// until there is an idle one (older than the grace, not answering) to close.
TEST_F(AdminHttp, YoungConnectionsSurviveABurst) {
  AdminOptions opts;
  opts.max_unauthorized_per_ip = 2;
  opts.unauthorized_grace = 300ms;
  opts.stats = std::make_shared<AdminStats>();
  start(opts);
  auto a = connect();
  auto b = connect();
  auto c = connect();  // over the cap, but a and b are young
  for (auto* s : {&a, &b, &c}) {
    EXPECT_EQ(roundtrip(*s, http::verb::get, "/healthz").result(), http::status::ok);
  }
  EXPECT_EQ(opts.stats->limit.load(), 0u);
  std::this_thread::sleep_for(350ms);  // the grace under test, not synchronisation
  auto d = connect();                  // now a is idle and oldest: it goes
  EXPECT_EQ(roundtrip(d, http::verb::get, "/healthz").result(), http::status::ok);
  auto [took, got] = read_until_closed(a);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(opts.stats->limit.load(), 1u);
  EXPECT_EQ(roundtrip(b, http::verb::get, "/healthz").result(), http::status::ok);
}

// A connection gets unauthorized_timeout from accept to send an authorised request: silent
// ones and ones asking only /healthz are closed then; an authorised one lives on the normal
// read timeout.
TEST_F(AdminHttp, FirstDeadlineForUnauthorized) {
  AdminOptions opts;
  opts.token = "t0ken";
  opts.unauthorized_timeout = 300ms;
  opts.read_timeout = 5s;
  opts.stats = std::make_shared<AdminStats>();
  start(opts);
  auto silent = connect();
  auto probe = connect();
  auto scraper = connect();
  EXPECT_EQ(roundtrip(probe, http::verb::get, "/healthz").result(), http::status::ok);
  EXPECT_EQ(roundtrip(scraper, http::verb::get, "/metrics", "Bearer t0ken").result(),
            http::status::ok);
  auto [took, got] = read_until_closed(silent);
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 2s);
  std::tie(took, got) = read_until_closed(probe);
  EXPECT_LT(took, 2s);
  // Well past the first deadline, the authorised connection still answers.
  std::this_thread::sleep_for(400ms);  // the deadline under test, not synchronisation
  EXPECT_EQ(roundtrip(scraper, http::verb::get, "/metrics", "Bearer t0ken").result(),
            http::status::ok);
  EXPECT_EQ(opts.stats->timeout.load(), 2u);
}

// Past max_connections authorised keep-alive connections, a new one's request is still
// served, then its connection closed; a freed slot is taken again.
TEST_F(AdminHttp, AuthorizedPastTheCapAnswersThenCloses) {
  AdminOptions opts;
  opts.max_connections = 1;
  start(opts);
  auto a = connect();
  EXPECT_TRUE(roundtrip(a, http::verb::get, "/api/sessions").keep_alive());
  auto b = connect();
  const auto res = roundtrip(b, http::verb::get, "/api/sessions");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_FALSE(res.keep_alive());
  auto [took, got] = read_until_closed(b);
  EXPECT_LT(took, 2s);
  a.close();
  bool kept = false;  // the slot frees once the server notices the close: poll
  for (int i = 0; i < 100 && !kept; ++i) {
    auto d = connect();
    kept = roundtrip(d, http::verb::get, "/api/sessions").keep_alive();
    if (!kept) {
      std::this_thread::sleep_for(20ms);
    }
  }
  EXPECT_TRUE(kept);
}

// After stop(), new connections are refused.
TEST_F(AdminHttp, StopStopsAccepting) {
  start();
  const auto where = server_->local_endpoint();
  EXPECT_EQ(once(http::verb::get, "/healthz").result(), http::status::ok);
  server_->stop();
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    tcp::socket s(client_ioc_);
    boost::system::error_code ec;
    s.connect(where, ec);
    refused = ec == asio::error::connection_refused;
    if (!refused) {
      std::this_thread::sleep_for(10ms);
    }
  }
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace gw::app

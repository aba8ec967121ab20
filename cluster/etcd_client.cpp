#include "cluster/etcd_client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <memory>

namespace gw::cluster {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

/// A range of the whole registry at 10,000 routes is a few MiB; this is far above that and
/// bounds what a broken or hostile endpoint can make us hold.
constexpr std::size_t kMaxResponseBytes = 64 * 1024 * 1024;
/// One watch message carries at most etcd's request size in events (1.5 MiB by default).
constexpr std::size_t kMaxWatchLine = 16 * 1024 * 1024;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "cluster"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::no_endpoint:
        return "no etcd endpoint";
      case errc::response_too_large:
        return "etcd response too large";
      case errc::line_too_long:
        return "etcd watch message too large";
      case errc::http_status:
        return "etcd answered an HTTP error";
    }
    return "unknown cluster error";
  }
};

std::error_code to_std(const boost::system::error_code& ec) { return ec; }

/// Connects to `ep` within the stream's deadline.
asio::awaitable<boost::system::error_code> connect(beast::tcp_stream& stream,
                                                   const EtcdEndpoint& ep) {
  tcp::resolver resolver(stream.get_executor());
  auto [rec, results] = co_await resolver.async_resolve(ep.host, std::to_string(ep.port), kTuple);
  if (rec) {
    co_return rec;
  }
  auto [ec, where] = co_await stream.async_connect(results, kTuple);
  if (!ec) {
    stream.socket().set_option(tcp::no_delay(true));
  }
  co_return ec;
}

http::request<http::string_body> make_request(const EtcdEndpoint& ep, const std::string& path,
                                              std::string body) {
  http::request<http::string_body> req{http::verb::post, path, 11};
  req.set(http::field::host, ep.text());
  req.set(http::field::content_type, "application/json");
  req.body() = std::move(body);
  req.prepare_payload();
  return req;
}

}  // namespace

const std::error_category& cluster_category() noexcept {
  static const Category c;
  return c;
}
std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), cluster_category()};
}

EtcdClient::EtcdClient(asio::any_io_executor executor, std::vector<EtcdEndpoint> endpoints,
                       std::chrono::milliseconds timeout)
    : executor_(std::move(executor)), endpoints_(std::move(endpoints)), timeout_(timeout) {}

asio::awaitable<gw::Expected<std::string>> EtcdClient::post(std::string path, std::string body) {
  if (endpoints_.empty()) {
    co_return gw::Unexpected(errc::no_endpoint);
  }
  std::error_code last;
  for (std::size_t attempt = 0; attempt < endpoints_.size(); ++attempt) {
    const std::size_t index = (current_ + attempt) % endpoints_.size();
    const EtcdEndpoint& ep = endpoints_[index];
    beast::tcp_stream stream(executor_);
    stream.expires_after(timeout_);
    if (auto ec = co_await connect(stream, ep)) {
      last = to_std(ec);
      continue;
    }
    auto req = make_request(ep, path, body);
    if (auto [ec, n] = co_await http::async_write(stream, req, kTuple); ec) {
      last = to_std(ec);
      continue;
    }
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxResponseBytes);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, kTuple);
    if (ec == http::error::body_limit) {
      last = make_error_code(errc::response_too_large);
      continue;
    }
    if (ec) {
      last = to_std(ec);
      continue;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    auto& res = parser.get();
    // A 503 (no leader, member stopping) is the next endpoint's to answer.
    if (res.result() == http::status::service_unavailable && attempt + 1 < endpoints_.size()) {
      last = make_error_code(errc::http_status);
      continue;
    }
    current_ = index;
    if (res.result() != http::status::ok && res.body().empty()) {
      co_return gw::Unexpected(errc::http_status);
    }
    co_return std::move(res.body());
  }
  co_return gw::Unexpected(last);
}

asio::awaitable<std::error_code> EtcdClient::watch(
    std::string body, std::function<void(std::string_view)> on_message) {
  if (endpoints_.empty()) {
    co_return make_error_code(errc::no_endpoint);
  }
  auto stream = std::make_shared<beast::tcp_stream>(executor_);
  std::weak_ptr<beast::tcp_stream> weak = stream;
  cancel_ = [weak] {
    if (auto s = weak.lock()) {
      beast::error_code ignored;
      s->socket().close(ignored);
    }
  };
  struct Clear {
    std::function<void()>& f;
    ~Clear() { f = nullptr; }
  } clear{cancel_};

  std::error_code last;
  bool connected = false;
  for (std::size_t attempt = 0; attempt < endpoints_.size() && !connected; ++attempt) {
    const std::size_t index = (current_ + attempt) % endpoints_.size();
    stream->expires_after(timeout_);
    if (auto ec = co_await connect(*stream, endpoints_[index])) {
      last = to_std(ec);
      beast::error_code ignored;
      stream->socket().close(ignored);
      continue;
    }
    current_ = index;
    connected = true;
  }
  if (!connected) {
    co_return last;
  }
  auto req = make_request(endpoints_[current_], "/v3/watch", std::move(body));
  if (auto [ec, n] = co_await http::async_write(*stream, req, kTuple); ec) {
    co_return to_std(ec);
  }
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);  // a stream: bounded per message below instead
  if (auto [ec, n] = co_await http::async_read_header(*stream, buffer, parser, kTuple); ec) {
    co_return to_std(ec);
  }
  if (parser.get().result() != http::status::ok) {
    co_return make_error_code(errc::http_status);
  }
  stream->expires_never();  // the lease's keepalive notices a dead etcd and cancels us
  std::string pending;
  char chunk[16 * 1024];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    auto [ec, n] = co_await http::async_read_some(*stream, buffer, parser, kTuple);
    if (ec && ec != http::error::need_buffer) {
      co_return to_std(ec);
    }
    pending.append(chunk, sizeof chunk - parser.get().body().size);
    // The gateway ends every message with a newline.
    std::size_t start = 0;
    for (std::size_t nl = pending.find('\n'); nl != std::string::npos;
         nl = pending.find('\n', start)) {
      if (nl > start) {
        on_message(std::string_view(pending).substr(start, nl - start));
      }
      start = nl + 1;
    }
    pending.erase(0, start);
    if (pending.size() > kMaxWatchLine) {
      co_return make_error_code(errc::line_too_long);
    }
  }
  co_return std::error_code{};
}

void EtcdClient::cancel_watch() {
  if (cancel_) {
    cancel_();
  }
}

}  // namespace gw::cluster

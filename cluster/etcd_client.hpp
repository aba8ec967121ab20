// A client for etcd v3's JSON gateway (POST /v3/..., JSON bodies; see registry_codec.hpp for
// what goes in them) over Boost.Beast, as coroutines on the caller's executor: no threads, no
// gRPC. One short HTTP/1.1 connection per call (etcd is near and calls are rare: claims,
// releases, a keepalive every few seconds) and one long-lived connection per watch stream.
// Several endpoints: a call that can't reach one tries the next, and the client stays on the
// one that answered. Every call has a deadline. Deliberately not here: what the bodies mean.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "cluster/registry_codec.hpp"
#include "common/expected.hpp"

namespace gw::cluster {

enum class errc {
  no_endpoint = 1,     ///< no endpoint configured
  response_too_large,  ///< over kMaxResponseBytes
  line_too_long,       ///< a watch message over kMaxWatchLine
  http_status,         ///< not 200, and no JSON error body
};
const std::error_category& cluster_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

class EtcdClient {
 public:
  EtcdClient(boost::asio::any_io_executor executor, std::vector<EtcdEndpoint> endpoints,
             std::chrono::milliseconds timeout);

  /// POSTs `body` to `path` ("/v3/kv/range"): the answer's body (etcd puts its errors in JSON
  /// bodies, with any status), or the transport error of the last endpoint tried.
  boost::asio::awaitable<gw::Expected<std::string>> post(std::string path, std::string body);

  /// Opens a /v3/watch stream with `body` and calls `on_message` with each JSON object until
  /// the stream ends or fails, or cancel_watch() is called; returns why it ended.
  boost::asio::awaitable<std::error_code> watch(std::string body,
                                                std::function<void(std::string_view)> on_message);
  /// Ends the running watch (its connection is closed); safe to call with none.
  void cancel_watch();

  /// The endpoint the client uses now, "HOST:PORT".
  std::string current() const { return endpoints_.empty() ? "" : endpoints_[current_].text(); }

 private:
  boost::asio::any_io_executor executor_;
  std::vector<EtcdEndpoint> endpoints_;
  std::chrono::milliseconds timeout_;
  std::size_t current_ = 0;
  std::function<void()> cancel_;  ///< closes the running watch's socket
};

}  // namespace gw::cluster

GW_DECLARE_ERRC(gw::cluster::errc)

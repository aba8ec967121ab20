// The public TLS listener: accepts on every I/O thread, reads each ClientHello without
// blocking anything else (3 s deadline, 64 KiB cap, one memory budget shared by all the
// hellos being read), routes it by SNI through the endpoint
// registry, and hands the socket plus the bytes read to the endpoint. A connection from a
// `--trusted-proxy` CIDR (an L4 balancer) must start with a PROXY v2 header, read inside the
// same deadline and caps; its source address is the visitor's from then on (CIDR rules,
// events, the channel's originator, logs). Refusals get the TLS
// alert of DESIGN.md section 4, a counter and a log line. Deliberately no TLS termination:
// the gateway never sees plaintext.
#pragma once

#include <spdlog/logger.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/cidr.hpp"
#include "common/histogram.hpp"
#include "common/listen.hpp"
#include "common/per_ip.hpp"
#include "common/per_second_budget.hpp"
#include "tunnel/cluster_routes.hpp"
#include "tunnel/endpoint_registry.hpp"
#include "tunnel/events.hpp"

namespace gw::sni {

/// One counter per outcome; tests and /metrics read them.
struct RouterStats {
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> routed{0};
  std::atomic<std::uint64_t> relayed{0};  ///< of those, to another cluster node (cluster mode)
  std::atomic<std::uint64_t> no_route{0};
  std::atomic<std::uint64_t> internal_only{0};  ///< an internal endpoint's name (ssh -L only)
  std::atomic<std::uint64_t> no_sni{0};
  std::atomic<std::uint64_t> bad_sni{0};
  std::atomic<std::uint64_t> not_tls{0};
  std::atomic<std::uint64_t> malformed{0};
  std::atomic<std::uint64_t> too_large{0};
  std::atomic<std::uint64_t> timeout{0};
  std::atomic<std::uint64_t> closed_early{0};
  std::atomic<std::uint64_t> over_limit{0};
  /// From a trusted proxy: no PROXY v2 header, or a malformed one.
  std::atomic<std::uint64_t> bad_proxy_header{0};
  /// Handed to the SSH side (--ssh-on-tls-port): began with "SSH-", or silent for
  /// kSshSilence.
  std::atomic<std::uint64_t> ssh{0};
  std::atomic<std::int64_t> pending{0};
  std::atomic<std::int64_t> pending_bytes{0};  ///< buffer capacity those pending hellos hold
  LatencyHistogram client_hello_wait{kLatencyBuckets};  ///< accept -> routed
};

/// Buffer bytes all the ClientHellos being read may hold between them. The pending count caps
/// alone let each hold the 80 KiB read cap: 20,000 would be over 1.5 GiB. 48 MiB holds 600
/// maximal hellos, or 12,000 ordinary ones (under 4 KiB, post-quantum key shares included)
/// with the reserve below; real clients send theirs at once, so even a busy gateway holds few.
inline constexpr std::int64_t kPendingHelloBudgetBytes = 48 << 20;
/// Every hello's first 4 KiB may use the whole budget; bytes past that only the budget minus
/// kPendingHelloReserveBytes. So a flood of large partial hellos stops growing at 32 MiB and
/// still leaves 16 MiB (4,096 hellos of 4 KiB) for ordinary clients arriving meanwhile.
inline constexpr std::size_t kSmallHelloBytes = 4 * 1024;
inline constexpr std::int64_t kPendingHelloReserveBytes = 16 << 20;

/// With --ssh-on-tls-port, a connection that has sent nothing this long is an SSH client
/// waiting for the server's version string (RFC 4253 4.2 lets either side speak first; TLS
/// clients always send their ClientHello at once).
inline constexpr std::chrono::milliseconds kSshSilence{300};

/// Set from ServeConfig: app/cli.hpp holds the defaults and why; the byte budget is a
/// constant (above) that tests may lower.
struct RouterConfig {
  std::chrono::milliseconds client_hello_timeout{};
  std::int64_t max_pending = 0;  ///< ClientHellos being read at once, over all clients
  int max_pending_per_ip = 0;    ///< ... from one IP
  std::int64_t pending_bytes_budget = kPendingHelloBudgetBytes;
  std::int64_t pending_bytes_reserve = kPendingHelloReserveBytes;
  /// Sources that must send a PROXY v2 header first (--trusted-proxy); empty: nobody may.
  std::vector<Cidr> trusted_proxies;
};

class Listener {
 public:
  /// Takes an SSH connection found on the TLS port, untouched: nothing was read from it.
  using SshHandoff = std::function<void(boost::asio::ip::tcp::socket)>;

  struct Cluster {
    std::shared_ptr<tunnel::ClusterRoutes> routes;
    std::shared_ptr<tunnel::Relay> relay;
  };

  Listener(std::shared_ptr<tunnel::EndpointRegistry> registry, RouterConfig config,
           std::shared_ptr<spdlog::logger> log,
           std::shared_ptr<tunnel::EventSink> events = std::make_shared<tunnel::NullEventSink>());

  /// Cluster mode (before listen()): a name whose winning route lives on another node goes to
  /// `relay` instead of the local registry. Without it (a single node) nothing else is asked.
  void set_cluster(std::shared_ptr<tunnel::ClusterRoutes> routes,
                   std::shared_ptr<tunnel::Relay> relay) {
    cluster_ = std::make_shared<const Cluster>(Cluster{std::move(routes), std::move(relay)});
  }

  /// --ssh-on-tls-port (before the I/O threads run): connections starting with "SSH-", or
  /// silent for kSshSilence, go to `ssh` instead of being refused as not TLS. Not for those
  /// from a --trusted-proxy (see listener.cpp).
  void set_ssh_handoff(SshHandoff ssh) {
    ssh_ = std::make_shared<const SshHandoff>(std::move(ssh));
  }

  /// Thread-safe: stops accepting.
  void stop() { acceptors_.stop(); }

  /// Listens on `where` once per context; returns the bound address (real port for port 0).
  boost::asio::ip::tcp::endpoint listen(const std::vector<boost::asio::io_context*>& contexts,
                                        const boost::asio::ip::tcp::endpoint& where);

  const RouterStats& stats() const { return *stats_; }

 private:
  void on_accept(boost::asio::ip::tcp::socket socket);

  std::shared_ptr<tunnel::EndpointRegistry> registry_;
  RouterConfig config_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<tunnel::EventSink> events_;
  std::shared_ptr<RouterStats> stats_ = std::make_shared<RouterStats>();
  std::shared_ptr<PerIpCounter> per_ip_ = std::make_shared<PerIpCounter>();
  std::shared_ptr<PerSecondBudget> log_budget_;
  std::shared_ptr<const Cluster> cluster_;  ///< null on a single node
  std::shared_ptr<const SshHandoff> ssh_;   ///< null: TLS only
  AcceptorSet acceptors_;
  std::atomic<std::uint64_t> next_id_{1};
};

}  // namespace gw::sni

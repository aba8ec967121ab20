// The cluster registry (CLUSTER.md): this node's lease and node key, its routes in etcd, and the
// watch-fed RouteCache of every node's routes. It is tunnel::ClusterRoutes for the listener
// (find_remote over the cache) and tunnel::ClaimGate for sshd (claims won by compare-and-swap
// in etcd). Everything runs as coroutines on one executor (the control thread's io_context);
// the public calls are thread-safe and post there. Fails static: with etcd unreachable the
// cache keeps routing and live forwards keep working; only new claims are refused ("registry
// unavailable, retry"); when the lease comes back unknown, every local route is re-claimed and
// those another session took meanwhile are closed.
// Deliberately not here: the relay (its own files), the HTTP transport (etcd_client.*).
#pragma once

#include <spdlog/logger.h>

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cluster/etcd_client.hpp"
#include "cluster/lease_state.hpp"
#include "cluster/route_cache.hpp"
#include "common/histogram.hpp"
#include "tunnel/claim_gate.hpp"
#include "tunnel/cluster_routes.hpp"

namespace gw::cluster {

struct RegistryConfig {
  std::vector<EtcdEndpoint> endpoints;
  std::string node_id;
  std::string relay_advertise;  ///< HOST:PORT in the node key; "" without a relay
  std::string version;
  std::chrono::milliseconds lease_ttl{10000};
  std::chrono::milliseconds request_timeout{2000};
};

/// Registry operations, for /metrics.
struct RegistryStats {
  enum Op { grant, keepalive, claim, release, takeover, range, watch, revoke, kOps };
  static constexpr const char* kOpNames[kOps] = {"grant",    "keepalive", "claim", "release",
                                                 "takeover", "range",     "watch", "revoke"};
  std::atomic<std::uint64_t> ok[kOps]{};
  std::atomic<std::uint64_t> failed[kOps]{};
  std::atomic<std::uint64_t> values_skipped{0};  ///< etcd values that did not parse
  std::atomic<std::uint64_t> reclaims{0};        ///< routes re-claimed after the lease came back
  std::atomic<std::uint64_t> routes_lost{0};     ///< forwards closed: deleted by someone else
  std::atomic<int> lease_state{0};               ///< LeaseState
  /// Latency of every etcd call but the watch stream, 0.5 ms .. 5 s.
  Histogram<10> latency{{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 5}};
};

/// /api/cluster.
struct ClusterView {
  std::string node_id;
  std::string etcd;  ///< the endpoint in use
  std::string lease_state;
  std::int64_t lease_id = 0;
  std::int64_t revision = 0;
  std::size_t routes = 0;
  std::vector<NodeRecord> nodes;
};

class Registry final : public tunnel::ClusterRoutes,
                       public tunnel::ClaimGate,
                       public std::enable_shared_from_this<Registry> {
 public:
  Registry(boost::asio::io_context& ioc, RegistryConfig config,
           std::shared_ptr<spdlog::logger> log);
  ~Registry() override;

  /// Starts the lease, the node key and the watch (on the io_context). ready() turns true once
  /// the node is registered and the cache loaded; until then claims answer "unavailable".
  void start();
  bool ready() const { return ready_.load(); }
  /// Why start has not finished ("" if it has): the last error, for the start-up refusal.
  std::string start_problem() const;
  /// Stops the lease and watch loops (a refused start-up).
  void stop();
  /// Thread-safe. A clean shutdown: stops the loops and revokes the lease, so etcd deletes
  /// every key of this node at once (not a TTL later), then calls `done` on the registry's
  /// executor. Bounded by the request timeout per endpoint.
  void shutdown(std::function<void()> done);

  // tunnel::ClusterRoutes
  std::optional<tunnel::RemoteRoute> find_remote(std::string_view server_name) override {
    return cache_.find_remote(server_name);
  }
  bool has_node(std::string_view node_id, std::string_view relay) const override {
    return cache_.has_node(node_id, relay);
  }
  // tunnel::ClaimGate
  std::unique_ptr<tunnel::GateTicket> claim(tunnel::GateClaim request,
                                            tunnel::GateCallbacks callbacks) override;
  tunnel::NameState probe(const std::string& name, const std::string& fpr) const override {
    return cache_.probe_remote(name, fpr);
  }
  std::string nesting(const std::string& name, const std::string& fpr) const override {
    return cache_.nesting(name, fpr);
  }
  Usage remote_usage(const std::string& fpr) const override {
    const auto u = cache_.remote_usage(fpr);
    return {u.endpoints, u.sessions};
  }

  const RouteCache& cache() const { return cache_; }
  const RegistryStats& stats() const { return stats_; }
  /// Thread-safe snapshot for the admin API.
  ClusterView view() const;
  const std::string& node_id() const { return config_.node_id; }

 private:
  class Ticket;
  enum class ClaimState { pending, won, released };
  struct Claim {
    tunnel::GateClaim request;
    tunnel::GateCallbacks callbacks;
    RouteKey key;
    std::string etcd_key;
    std::int64_t mod_revision = 0;
    ClaimState state = ClaimState::pending;
    bool cancelled = false;  ///< the ticket died while the claim was in flight
  };
  struct Outcome {
    tunnel::GateAnswer answer;
    bool lease_missing = false;  ///< etcd does not know our lease: re-grant
  };

  boost::asio::awaitable<void> lease_loop();
  boost::asio::awaitable<void> watch_loop();
  boost::asio::awaitable<bool> grant_and_register();
  boost::asio::awaitable<bool> resync();
  boost::asio::awaitable<void> run_claim(std::uint64_t id, bool reclaim);
  /// One attempt: read the name's holders, decide, compare-and-swap.
  boost::asio::awaitable<Outcome> try_claim(Claim& c, bool reclaim);
  boost::asio::awaitable<void> release(std::string etcd_key, std::int64_t mod_revision);
  boost::asio::awaitable<void> retry_releases();
  /// Times, counts and logs one etcd call.
  boost::asio::awaitable<gw::Expected<std::string>> call(RegistryStats::Op op, std::string path,
                                                         std::string body);
  void on_watch_message(std::string_view text);
  void handle_changes(const std::vector<CacheChange>& changes);
  /// A route of ours that etcd no longer has (deleted by someone else, or expired).
  void route_gone(std::uint64_t id);
  void lose(std::uint64_t id, const std::string& why);
  void set_lease_state_stat();
  void cancel(std::uint64_t id);

  boost::asio::io_context& ioc_;
  RegistryConfig config_;
  std::shared_ptr<spdlog::logger> log_;
  EtcdClient client_;
  RouteCache cache_;
  LeaseClock lease_;
  RegistryStats stats_;
  std::string boot_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopping_{false};
  mutable std::mutex problem_mutex_;
  std::string problem_;
  std::int64_t watch_from_ = 0;  ///< next revision the watch must deliver
  bool need_resync_ = true;
  std::atomic<std::uint64_t> next_claim_id_{1};
  std::atomic<std::int64_t> lease_id_{0};
  std::string current_etcd_;               ///< under problem_mutex_
  std::map<std::uint64_t, Claim> claims_;  ///< this node's routes, by claim id (ioc_ only)
  /// Releases etcd did not take (unreachable): retried when the lease is answered again, so
  /// a route given up during an outage does not outlive it.
  std::vector<std::pair<std::string, std::int64_t>> pending_releases_;
  boost::asio::steady_timer lease_timer_;
  boost::asio::steady_timer watch_timer_;
};

}  // namespace gw::cluster

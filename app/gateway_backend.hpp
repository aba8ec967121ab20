// The admin API's view of the live gateway: endpoints and sessions from the session
// directory's published snapshots, metrics from the counters. Wiring only (lives with main):
// it reads what sshd/ and sni_router/ already publish and computes nothing of its own.
#pragma once

#include <memory>
#include <string>

#include "app/admin_http.hpp"
#include "app/event_log.hpp"
#include "cluster/registry.hpp"
#include "sni_router/listener.hpp"
#include "sshd/server_context.hpp"

namespace gw::cluster {
struct RelayStats;
}

namespace gw::app {

class GatewayBackend final : public AdminBackend {
 public:
  /// `events` may be null (--event-log off); then snigate_events_dropped_total stays 0.
  /// `admin` may be null (admin API off; its metrics then read 0).
  GatewayBackend(std::shared_ptr<const sshd::ServerContext> ctx, const sni::Listener& tls,
                 std::string version, std::shared_ptr<const JsonEventLog> events = nullptr,
                 std::shared_ptr<const AdminStats> admin = nullptr)
      : ctx_(std::move(ctx)),
        tls_(tls),
        version_(std::move(version)),
        events_(std::move(events)),
        admin_(std::move(admin)) {}

  std::vector<EndpointView> endpoints() override;
  std::vector<SessionView> sessions() override;
  bool close_session(std::uint64_t id, std::string message) override;
  std::string metrics_text() override;
  std::optional<std::string> cluster_json() override;
  /// Cluster mode: endpoints of every node, /api/cluster, the registry's and the relay's
  /// metrics (`relay` null when this node has no --relay-listen).
  void set_cluster(std::shared_ptr<const cluster::Registry> registry,
                   std::shared_ptr<const cluster::RelayStats> relay) {
    cluster_ = std::move(registry);
    relay_ = std::move(relay);
  }

 private:
  std::shared_ptr<const sshd::ServerContext> ctx_;
  const sni::Listener& tls_;
  std::string version_;
  std::shared_ptr<const JsonEventLog> events_;
  std::shared_ptr<const AdminStats> admin_;
  std::shared_ptr<const cluster::Registry> cluster_;
  std::shared_ptr<const cluster::RelayStats> relay_;
};

}  // namespace gw::app

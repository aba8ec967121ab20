#include "app/gateway_backend.hpp"

#include "app/event_log.hpp"
#include "app/json.hpp"
#include "app/metrics.hpp"
#include "cluster/relay_stats.hpp"
#include "sshd/session_handle.hpp"
#include "tunnel/events.hpp"

namespace gw::app {

std::vector<EndpointView> GatewayBackend::endpoints() {
  std::vector<EndpointView> out;
  const std::string node = cluster_ ? cluster_->node_id() : "";
  for (const auto& session : ctx_->sessions->all()) {
    const sshd::SessionInfo info = session->info();
    for (const auto& e : info.endpoints) {
      out.push_back(EndpointView{e.id, e.url, "tls", rfc3339(e.created_at), e.pool, info.id,
                                 info.key_fingerprint, info.key_name, info.peer, e.open_connections,
                                 e.bytes_in, e.bytes_out, node, "",
                                 tunnel::binding_name(e.internal)});
    }
  }
  if (!cluster_) {
    return out;
  }
  // Other nodes' endpoints, from the registry's copy: what etcd holds (no counters, no key
  // name: those live on the owner). The URL uses this node's advertised port, which a cluster
  // behind one DNS name shares.
  for (const cluster::Holder& h : cluster_->cache().all_holders()) {
    if (h.key.node == node) {
      continue;
    }
    EndpointView v;
    v.id = h.key.node + ":" + h.key.session + ":" + h.key.host;
    v.url = "tls://" + h.key.host +
            (ctx_->advertise_port == 443 ? "" : ":" + std::to_string(ctx_->advertise_port));
    v.created_at =
        rfc3339(std::chrono::system_clock::time_point(std::chrono::milliseconds(h.value.opened)));
    v.pool = h.key.kind == cluster::RouteKind::pool;
    v.key_fingerprint = h.value.fpr;
    v.node = h.key.node;
    v.node_session = h.key.session;
    v.binding = tunnel::binding_name(h.value.internal);
    out.push_back(std::move(v));
  }
  return out;
}

std::optional<std::string> GatewayBackend::cluster_json() {
  if (!cluster_) {
    return std::nullopt;
  }
  const cluster::ClusterView v = cluster_->view();
  std::string nodes = "[";
  for (std::size_t i = 0; i < v.nodes.size(); ++i) {
    const cluster::NodeRecord& n = v.nodes[i];
    nodes += (i == 0 ? "" : ",") + JsonObject()
                                       .str("id", n.id)
                                       .str_or_null("relay", n.value.relay)
                                       .str("version", n.value.version)
                                       .str("boot", n.value.boot)
                                       .boolean("self", n.id == v.node_id)
                                       .num("lease", n.lease)
                                       .take();
  }
  nodes += "]";
  return JsonObject()
      .str("node_id", v.node_id)
      .str("etcd", v.etcd)
      .str("lease_state", v.lease_state)
      .num("lease_id", v.lease_id)
      .num("revision", v.revision)
      .num("routes", static_cast<std::uint64_t>(v.routes))
      .raw("nodes", nodes)
      .take();
}

std::vector<SessionView> GatewayBackend::sessions() {
  std::vector<SessionView> out;
  for (const auto& session : ctx_->sessions->all()) {
    const sshd::SessionInfo info = session->info();
    SessionView v;
    v.id = info.id;
    v.client_addr = info.peer;
    v.user = info.user;
    v.key_fingerprint = info.key_fingerprint;
    v.key_name = info.key_name;
    v.started_at = rfc3339(info.started_at);
    for (const auto& e : info.endpoints) {
      v.endpoint_urls.push_back(e.url);
    }
    v.open_connections = info.open_connections;
    v.state = info.state;
    out.push_back(std::move(v));
  }
  return out;
}

bool GatewayBackend::close_session(std::uint64_t id, std::string message) {
  const auto session = ctx_->sessions->find(id);
  if (!session) {
    return false;
  }
  session->close_from_outside(std::move(message));
  return true;
}

std::string GatewayBackend::metrics_text() {
  const sshd::SshStats& ssh = *ctx_->stats;
  const sni::RouterStats& tls = tls_.stats();
  MetricsSnapshot m;
  m.connections_accepted = tls.accepted;
  m.connections_refused = {
      {"no_route", tls.no_route},
      {"internal_endpoint", tls.internal_only},
      {"no_sni", tls.no_sni},
      {"bad_sni", tls.bad_sni},
      {"not_tls", tls.not_tls},
      {"malformed", tls.malformed},
      {"too_large", tls.too_large},
      {"timeout", tls.timeout},
      {"closed_early", tls.closed_early},
      {"bad_proxy_header", tls.bad_proxy_header},
      {"cidr_denied", ssh.connections_cidr_denied},
      {"upstream_refused", ssh.channel_open_failures},
      {"limit",
       tls.over_limit + ssh.connections_over_endpoint_limit + ssh.connections_over_open_limit},
  };
  m.connections_routed = tls.routed;
  m.direct_refused = ssh.direct_refused;
  m.tls_port_ssh = tls.ssh;
  m.connections_active =
      static_cast<std::uint64_t>(std::max<std::int64_t>(0, ssh.connections_active));
  m.connections_pending = static_cast<std::uint64_t>(std::max<std::int64_t>(0, tls.pending));
  m.pending_hello_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(0, tls.pending_bytes));
  const auto gauge = [](const std::atomic<std::int64_t>& v) {
    return static_cast<std::uint64_t>(std::max<std::int64_t>(0, v.load()));
  };
  m.admin_refused = {{"unauthorized", 0}, {"bad_host", 0}, {"limit", 0}, {"timeout", 0}};
  if (admin_) {
    m.admin_refused = {{"unauthorized", admin_->unauthorized},
                       {"bad_host", admin_->bad_host},
                       {"limit", admin_->limit},
                       {"timeout", admin_->timeout}};
    m.admin_connections_unauthorized = gauge(admin_->open_unauthorized);
    m.admin_connections_authorized = gauge(admin_->open_authorized);
  }
  m.bytes_in = ssh.bytes_in;
  m.bytes_out = ssh.bytes_out;
  m.endpoints = ctx_->registry->size();
  m.sessions_unauthenticated =
      static_cast<std::uint64_t>(std::max<std::int64_t>(0, ctx_->startups->size()));
  // The directory lists every SSH connection; the gauge counts the authenticated ones.
  const std::uint64_t all = ctx_->sessions->size();
  m.sessions = all > m.sessions_unauthenticated ? all - m.sessions_unauthenticated : 0;
  m.sessions_refused = ssh.sessions_refused_startups;
  m.auth_failures = ssh.auth_failures;
  m.forwards_refused = ssh.forwards_refused;
  m.channel_violations = ssh.channel_violations;
  m.channel_open_failures = ssh.channel_open_failures;
  m.ssh_requests_refused = ssh.requests_refused;
  m.ssh_sessions_paused = ssh.sessions_paused;
  m.buffer_budget_closes = ssh.buffer_budget_closes;
  m.tls_handshake_closes = {{"timeout", ssh.tls_handshake_timeouts},
                            {"record_overflow", ssh.tls_record_overflows},
                            {"bad_record_type", ssh.tls_bad_record_types}};
  m.buffered_bytes =
      static_cast<std::uint64_t>(std::max<std::int64_t>(0, ctx_->sessions->buffered_bytes()));
  m.client_hello_wait = tls.client_hello_wait.snapshot();
  m.channel_open_latency = ssh.channel_open_latency.snapshot();
  m.events_dropped = events_ ? events_->dropped() : 0;
  m.version = version_;
  if (cluster_) {
    const cluster::RegistryStats& st = cluster_->stats();
    ClusterMetrics& c = m.cluster.emplace();
    for (int op = 0; op < cluster::RegistryStats::kOps; ++op) {
      c.ops_ok[cluster::RegistryStats::kOpNames[op]] = st.ok[op];
      c.ops_failed[cluster::RegistryStats::kOpNames[op]] = st.failed[op];
    }
    c.latency = st.latency.snapshot();
    const cluster::ClusterView v = cluster_->view();
    c.lease_state = v.lease_state;
    c.routes = v.routes;
    c.nodes = v.nodes.size();
    c.revision = static_cast<std::uint64_t>(std::max<std::int64_t>(0, v.revision));
    c.values_skipped = st.values_skipped;
    c.reclaims = st.reclaims;
    c.routes_lost = st.routes_lost;
    if (relay_) {
      const cluster::RelayStats& r = *relay_;
      c.relayed_out = r.relayed_out;
      c.relayed_in = r.relayed_in;
      c.relay_failures = {
          {"out", "unreachable", r.out_unreachable}, {"out", "handshake", r.out_handshake},
          {"out", "quarantined", r.out_quarantined}, {"out", "stale", r.out_stale},
          {"out", "overloaded", r.out_overloaded},   {"out", "denied", r.out_denied},
          {"out", "protocol", r.out_protocol},       {"in", "certificate", r.in_certificate},
          {"in", "bad_header", r.in_bad_header},     {"in", "stale", r.in_stale},
          {"in", "timeout", r.in_timeout},           {"in", "overloaded", r.in_overloaded},
      };
      c.relay_resumed = r.resumed;
      c.spares_idle = static_cast<std::uint64_t>(std::max<std::int64_t>(0, r.spares_idle));
      c.spares = {{"used", r.spare_used},
                  {"redialed", r.spare_redialed},
                  {"dead", r.spare_dead},
                  {"expired", r.spare_expired},
                  {"dropped", r.spare_dropped},
                  {"dial_failed", r.spare_dial_failed},
                  {"returned", r.spare_returned},
                  {"surplus", r.spare_surplus},
                  {"kept", r.in_kept}};
    }
  }
  return render_metrics(m);
}

}  // namespace gw::app

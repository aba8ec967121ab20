// Renders the gateway's counters as Prometheus text exposition format 0.0.4 (`GET /metrics`).
// Pure: takes a plain snapshot struct, returns text. Deliberately no registry, no atomics and
// no I/O here: the counters live with their owners (router, sessions), the HTTP server serves
// the text.
//
// How to wire (lead): in AdminBackend::metrics_text(), fill a MetricsSnapshot from the live
// atomic counters (load(relaxed) each; pre-seed `connections_refused` with every known reason
// at 0 so the series exist from start-up), copy the two histograms with `.snapshot()`, and
// return `render_metrics(snapshot)`.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/histogram.hpp"

namespace gw::app {

/// Everything /metrics shows. Counters only ever grow; gauges are current values.
/// Cluster mode's registry (cluster/registry.hpp), for /metrics.
struct ClusterMetrics {
  std::map<std::string, std::uint64_t> ops_ok, ops_failed;  ///< by operation (grant, claim...)
  HistogramSnapshot latency;  ///< every etcd call but the watch stream
  std::string lease_state;    ///< none, live, suspect, lost or expired
  std::uint64_t routes = 0, nodes = 0, values_skipped = 0, reclaims = 0, routes_lost = 0;
  std::uint64_t revision = 0;
  // The relay (nodes with --relay-listen): connections spliced, failures by side and reason.
  std::uint64_t relayed_out = 0, relayed_in = 0;
  struct RelayFailure {
    const char* side;    ///< "out": this node dialed; "in": a peer dialed this node
    const char* reason;  ///< cluster/relay_stats.hpp
    std::uint64_t count;
  };
  std::vector<RelayFailure> relay_failures;
  std::uint64_t relay_resumed = 0;  ///< of relayed_out: over a resumed TLS session
  std::uint64_t spares_idle = 0;    ///< warm spares open now
  struct SpareOutcome {
    const char* outcome;  ///< used, redialed, dead, expired, dropped, dial_failed
    std::uint64_t count;
  };
  std::vector<SpareOutcome> spares;
};

struct MetricsSnapshot {
  // TLS side (SNI router)
  std::uint64_t connections_accepted = 0;  ///< counter: TLS connections accepted
  /// counter per `reason` label (no_route, no_sni, timeout, not_tls, malformed, too_large,
  /// cidr_denied, ...). Rendered in key order; keep the key set small and fixed.
  std::map<std::string, std::uint64_t> connections_refused;
  std::uint64_t connections_routed = 0;  ///< counter: handed to an endpoint
  std::uint64_t direct_refused = 0;  ///< counter: ssh -L / -W opens to internal endpoints refused
  std::uint64_t tls_port_ssh = 0;    ///< counter: TLS-port connections handed to the SSH side
  std::uint64_t connections_active = 0;   ///< gauge: open TLS connections
  std::uint64_t connections_pending = 0;  ///< gauge: accepted, ClientHello still owed
  std::uint64_t pending_hello_bytes = 0;  ///< gauge: buffer bytes those pending hellos hold
  std::uint64_t bytes_in = 0;             ///< counter: client -> gateway bytes
  std::uint64_t bytes_out = 0;            ///< counter: gateway -> client bytes
  // SSH side
  std::uint64_t endpoints = 0;                 ///< gauge: registered endpoints
  std::uint64_t sessions = 0;                  ///< gauge: authenticated SSH sessions
  std::uint64_t sessions_unauthenticated = 0;  ///< gauge: SSH connections not yet authenticated
  std::uint64_t sessions_refused = 0;       ///< counter: refused at accept (unauthenticated caps)
  std::uint64_t auth_failures = 0;          ///< counter: failed publickey attempts
  std::uint64_t forwards_refused = 0;       ///< counter: tcpip-forward requests refused
  std::uint64_t channel_violations = 0;     ///< counter: channels closed for flow-control abuse
  std::uint64_t channel_open_failures = 0;  ///< counter: forwarded-tcpip opens that failed
  std::uint64_t ssh_requests_refused = 0;   ///< counter: over a session's request budget
  std::uint64_t ssh_sessions_paused = 0;    ///< counter: input paused, over the message budget
  std::uint64_t buffer_budget_closes = 0;   ///< counter: stalled connections closed, see cpp
  /// counter: connections closed before the client's TLS handshake was over, by reason
  std::map<std::string, std::uint64_t> tls_handshake_closes;
  std::uint64_t buffered_bytes = 0;  ///< gauge: held toward public clients, all keys
  // Event log
  std::uint64_t events_dropped = 0;  ///< counter: events not written (queue full, write error)
  // Admin API itself
  /// counter per `reason` label: unauthorized (401), bad_host (421), limit (closed to make
  /// room), timeout (no authorised request in time). Same rule: small fixed key set.
  std::map<std::string, std::uint64_t> admin_refused;
  std::uint64_t admin_connections_unauthorized = 0;  ///< gauge: no authorised request yet
  std::uint64_t admin_connections_authorized = 0;    ///< gauge: kept alive after one
  // Latency, in seconds
  HistogramSnapshot client_hello_wait;     ///< accept -> complete ClientHello
  HistogramSnapshot channel_open_latency;  ///< open request -> confirmation
  std::string version;                     ///< non-empty: adds snigate_build_info{version="..."} 1
  std::optional<ClusterMetrics> cluster;   ///< cluster mode only: adds the registry's families
};

/// Returns the exposition text: every family has `# HELP` and `# TYPE` before its samples,
/// names are prefixed `snigate_`, lines end in '\n'. Never throws except bad_alloc.
std::string render_metrics(const MetricsSnapshot& s);

/// Escapes a label value for the text format: backslash, double quote and newline.
std::string escape_label_value(std::string_view v);

}  // namespace gw::app

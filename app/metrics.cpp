// Prometheus text format 0.0.4 writer for MetricsSnapshot. See metrics.hpp.
#include "app/metrics.hpp"

#include <charconv>
#include <cmath>
#include <string_view>

namespace gw::app {
namespace {

// Shortest round-trip form ("0.005", "1", "2.5"), which is also what Prometheus prints for le.
std::string format_double(double v) {
  if (std::isnan(v)) {
    return "NaN";
  }
  if (std::isinf(v)) {
    return v > 0 ? "+Inf" : "-Inf";
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP snigate_";
    out_ += name;
    out_ += ' ';
    out_ += help;  // our own constant text: no escaping needed
    out_ += "\n# TYPE snigate_";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  void sample(std::string_view name, std::string_view labels, std::string_view value) {
    out_ += "snigate_";
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }

  void sample(std::string_view name, std::string_view labels, std::uint64_t value) {
    sample(name, labels, std::to_string(value));
  }

  void counter(std::string_view name, std::string_view help, std::uint64_t value) {
    const std::string full = std::string(name) + "_total";
    family(full, "counter", help);
    sample(full, "", value);
  }

  void gauge(std::string_view name, std::string_view help, std::uint64_t value) {
    family(name, "gauge", help);
    sample(name, "", value);
  }

  void histogram(std::string_view name, std::string_view help, const HistogramSnapshot& h) {
    family(name, "histogram", help);
    const std::string bucket = std::string(name) + "_bucket";
    for (std::size_t i = 0; i < h.bounds.size() && i < h.counts.size(); ++i) {
      sample(bucket, "le=\"" + format_double(h.bounds[i]) + "\"", h.counts[i]);
    }
    sample(bucket, "le=\"+Inf\"", h.count);
    sample(std::string(name) + "_sum", "", format_double(h.sum));
    sample(std::string(name) + "_count", "", h.count);
  }

  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string render_metrics(const MetricsSnapshot& s) {
  Writer w;
  w.counter("connections_accepted", "TLS connections accepted on the public listeners.",
            s.connections_accepted);
  w.family("connections_refused_total", "counter",
           "TLS connections refused after accept, by reason.");
  for (const auto& [reason, n] : s.connections_refused) {
    w.sample("connections_refused_total", "reason=\"" + escape_label_value(reason) + "\"", n);
  }
  w.counter("connections_routed", "TLS connections handed to an endpoint.", s.connections_routed);
  w.counter(
      "direct_refused",
      "ssh -L / -W channel opens to internal endpoints refused (no permitopen, another "
      "key's name, a public or unknown name, restrict, the per-session limit or request budget).",
      s.direct_refused);
  w.counter("tls_port_ssh",
            "Connections on the public TLS port handed to the SSH side (--ssh-on-tls-port: they "
            "began with SSH- or sent nothing for 300 ms).",
            s.tls_port_ssh);
  w.gauge("connections_active", "TLS connections currently open.", s.connections_active);
  w.gauge("connections_pending", "TLS connections accepted whose ClientHello is still awaited.",
          s.connections_pending);
  w.gauge("pending_hello_bytes",
          "Buffer bytes held by TLS connections whose ClientHello is still being read.",
          s.pending_hello_bytes);
  w.counter("bytes_in", "Bytes received from public TLS clients.", s.bytes_in);
  w.counter("bytes_out", "Bytes sent to public TLS clients.", s.bytes_out);
  w.gauge("endpoints", "Endpoints currently registered.", s.endpoints);
  w.gauge("sessions", "Authenticated SSH sessions currently open.", s.sessions);
  w.gauge("sessions_unauthenticated", "SSH connections open but not yet authenticated.",
          s.sessions_unauthenticated);
  w.counter("sessions_refused",
            "SSH connections refused at accept: too many unauthenticated, overall or per IP.",
            s.sessions_refused);
  w.counter("auth_failures", "Failed SSH authentication attempts.", s.auth_failures);
  w.counter("forwards_refused", "SSH tcpip-forward requests refused.", s.forwards_refused);
  w.counter("channel_violations",
            "Forwarded channels closed because the ssh client broke flow control (data past the "
            "window, window overflow).",
            s.channel_violations);
  w.counter("channel_open_failures", "forwarded-tcpip channel opens that failed.",
            s.channel_open_failures);
  w.counter("ssh_requests_refused",
            "SSH channel and global requests refused: the session sent more than 100 in a second.",
            s.ssh_requests_refused);
  w.counter("ssh_sessions_paused",
            "Times an SSH session's input was paused until the next second: it sent more than "
            "500 messages without data (beyond those its traffic earns) in one second.",
            s.ssh_sessions_paused);
  w.counter("buffer_budget_closes",
            "Tunnelled connections closed because their endpoint or key held more buffered bytes "
            "than its budget and their public client had read nothing for 500 ms.",
            s.buffer_budget_closes);
  w.family("tls_handshake_closes_total", "counter",
           "Tunnelled connections closed before the client's TLS handshake was over: past "
           "--tls-handshake-timeout, a record over 2^14+2048 bytes, or a record type no "
           "handshake sends.");
  for (const auto& [reason, n] : s.tls_handshake_closes) {
    w.sample("tls_handshake_closes_total", "reason=\"" + escape_label_value(reason) + "\"", n);
  }
  w.gauge("buffered_bytes",
          "Bytes tunnelled connections hold buffered toward public clients that read slower "
          "than their upstream sends (the bridges' buffers and what the channels keep).",
          s.buffered_bytes);
  w.counter("events_dropped",
            "Events not written to the event log: its queue was full or the write failed.",
            s.events_dropped);
  w.family("admin_refused_total", "counter", "Admin API connections refused or closed, by reason.");
  for (const auto& [reason, n] : s.admin_refused) {
    w.sample("admin_refused_total", "reason=\"" + escape_label_value(reason) + "\"", n);
  }
  w.family("admin_connections", "gauge",
           "Admin API connections open, by whether they have sent an authorised request.");
  w.sample("admin_connections", "state=\"unauthorized\"", s.admin_connections_unauthorized);
  w.sample("admin_connections", "state=\"authorized\"", s.admin_connections_authorized);
  w.histogram("client_hello_wait_seconds",
              "Time from TLS accept to a complete ClientHello (or giving up).",
              s.client_hello_wait);
  w.histogram("channel_open_seconds",
              "Time from forwarded-tcpip channel open request to the client's answer.",
              s.channel_open_latency);
  if (s.cluster) {
    const ClusterMetrics& c = *s.cluster;
    w.family("registry_operations_total", "counter",
             "Cluster registry calls to etcd, by operation and result.");
    for (const auto& [op, n] : c.ops_ok) {
      w.sample("registry_operations_total", "op=\"" + escape_label_value(op) + "\",result=\"ok\"",
               n);
    }
    for (const auto& [op, n] : c.ops_failed) {
      w.sample("registry_operations_total",
               "op=\"" + escape_label_value(op) + "\",result=\"failed\"", n);
    }
    w.histogram("registry_operation_seconds",
                "Latency of the cluster registry's etcd calls (the watch stream aside).",
                c.latency);
    w.family("cluster_lease_state", "gauge",
             "1 for the node lease's current state (live: keepalives answered; suspect, lost: "
             "etcd not answering; expired: being re-granted).");
    for (const char* state : {"none", "live", "suspect", "lost", "expired"}) {
      w.sample("cluster_lease_state", std::string("state=\"") + state + "\"",
               std::uint64_t{c.lease_state == state ? 1u : 0u});
    }
    w.gauge("cluster_routes", "Routes of every node in this node's copy of the registry.",
            c.routes);
    w.gauge("cluster_nodes", "Nodes registered in etcd, this one included.", c.nodes);
    w.gauge("cluster_revision", "The etcd revision this node's copy has seen.", c.revision);
    w.counter("registry_values_skipped", "Registry keys or values from etcd that did not parse.",
              c.values_skipped);
    w.counter("cluster_reclaims", "Local routes claimed again after the lease was lost.",
              c.reclaims);
    w.counter("cluster_routes_lost",
              "Local forwards closed because the registry gave their name to someone else.",
              c.routes_lost);
    w.family("relay_connections_total", "counter",
             "Visitor connections relayed between nodes: out (this node was the ingress) and "
             "in (this node owns the route).");
    w.sample("relay_connections_total", "direction=\"out\"", c.relayed_out);
    w.sample("relay_connections_total", "direction=\"in\"", c.relayed_in);
    w.family("relay_failures_total", "counter",
             "Relay connections that failed, by side (out: dialing a peer; in: from a peer) and "
             "reason.");
    for (const auto& f : c.relay_failures) {
      w.sample("relay_failures_total",
               std::string("side=\"") + f.side + "\",reason=\"" + f.reason + "\"", f.count);
    }
    w.counter("relay_resumed",
              "Relayed connections out whose TLS session was resumed (no certificate signatures).",
              c.relay_resumed);
    w.gauge("relay_spares",
            "Warm spare relay connections open now: handshaken, waiting for a visitor.",
            c.spares_idle);
    w.family("relay_spares_total", "counter",
             "Warm spare relay connections by what became of them: used (a visitor went over "
             "it), redialed (it broke before the owner's status; the visitor was dialed afresh), "
             "dead (the peer closed it while it waited), expired (unused for the spare idle "
             "time), dropped (the peer left the registry), dial_failed (could not be opened), "
             "returned (relay protocol 2: idle again after its visitor's clean end), surplus "
             "(... closed instead: the shelf was full), kept (owner side: a peer's connection "
             "waiting for its next visitor's header after one).");
    for (const auto& s : c.spares) {
      w.sample("relay_spares_total", std::string("outcome=\"") + s.outcome + "\"", s.count);
    }
  }
  if (!s.version.empty()) {
    w.family("build_info", "gauge", "Always 1; the version label says which snigate runs.");
    w.sample("build_info", "version=\"" + escape_label_value(s.version) + "\"", 1);
  }
  return w.take();
}

}  // namespace gw::app

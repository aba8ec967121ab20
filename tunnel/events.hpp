// The gateway's event model: plain structs that both sides (SSH sessions, SNI router) fill in
// and hand to an EventSink, plus the sink interface. No I/O, no formatting, no clocks read here:
// the JSON writer lives in app/event_log.*, and producers stamp their own times.
//
// How to wire (lead):
//   - main() builds one sink (app::JsonEventLog, or tunnel::NullEventSink when --event-log is
//     off) and passes an `EventSink&` (or shared_ptr) to the SSH server and the SNI router.
//   - Router: at the end of every accepted TLS connection (routed or refused), fill one
//     ConnectionClosed and call sink.emit(ev). Refusals set refusal_reason and leave the
//     endpoint fields empty.
//   - Session: emit SessionStarted after auth succeeds, SessionEnded when it goes away,
//     EndpointCreated on a successful tcpip-forward, EndpointDeleted on cancel/teardown.
//   - emit() may be called from any thread and must not throw. JsonEventLog's only builds the
//     line and queues it (no I/O, never blocks on the disk); still, call it after the socket
//     work is done, not while holding your locks.
//   - Every ConnectionClosed is made by connection_closed() below, from the router's accept
//     stamps (ConnectionStart), so start and duration always mean accept to close.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace gw::tunnel {

using SystemTime = std::chrono::system_clock::time_point;

/// One public TLS connection that ended, whether it reached an endpoint or was refused after
/// accept. Field names follow ngrok's tcp_connection_closed.v0 where they apply.
struct ConnectionClosed {
  std::string endpoint_id;   ///< "ep_12"; empty when refused before routing
  std::string endpoint_url;  ///< "tls://app.example.com"; empty when refused before routing
  std::string server_name;   ///< SNI as sent by the peer (raw bytes; the writer escapes)
  std::string client_ip;
  std::uint16_t client_port = 0;
  SystemTime start{};                   ///< accept time
  std::chrono::nanoseconds duration{};  ///< accept to close
  std::uint64_t bytes_in = 0;           ///< client -> gateway, including the peeked ClientHello
  std::uint64_t bytes_out = 0;          ///< gateway -> client
  /// How it ended: closed, client_reset, upstream_reset, upstream_refused, idle_client,
  /// idle_upstream, session_closed, shutdown, refused.
  std::string close_reason;
  /// Empty if it reached an endpoint; else no_route, no_sni, timeout, not_tls, malformed,
  /// too_large, cidr_denied, limit, ...
  std::string refusal_reason;
  std::string key_fingerprint;   ///< "SHA256:..." of the key owning the endpoint; may be empty
  std::string key_name;          ///< authorized_keys comment/name; may be empty
  std::uint64_t conn_id = 0;     ///< the router's connection number (logs show it as t<id>)
  std::uint64_t session_id = 0;  ///< owning SSH session; 0 when refused before routing
  /// How the connection arrived: false = the public TLS port, true = a teammate's direct-tcpip
  /// channel (ssh -L / -W) to an internal endpoint.
  bool internal = false;
  /// For internal connections: the teammate's SSH session and key (client_ip/port are its
  /// SSH address). 0 / empty otherwise.
  std::uint64_t client_session_id = 0;
  std::string client_key_fingerprint{};
  /// Cluster mode: the node the visitor reached when it was relayed here; empty otherwise.
  std::string ingress_node;
};

/// A public connection as the router accepted it: what every ConnectionClosed starts from.
struct ConnectionStart {
  std::uint64_t conn_id = 0;
  std::string client_ip;
  std::uint16_t client_port = 0;
  std::string server_name;  ///< empty until the ClientHello named one
  std::chrono::steady_clock::time_point accepted_at{};
  SystemTime accepted_wall{};
  std::string ingress_node;  ///< cluster mode: the node that relayed it here; empty otherwise
  bool internal = false;     ///< see ConnectionClosed::internal and the two below
  std::uint64_t client_session_id = 0;
  std::string client_key_fingerprint{};
};

/// "internal" or "public": the binding's name in events, the API and logs.
inline const char* binding_name(bool internal) { return internal ? "internal" : "public"; }

/// Who served a routed connection: the endpoint and the session (and key) holding it.
struct EndpointLabel {
  std::string endpoint_id;
  std::string endpoint_url;
  std::uint64_t session_id = 0;
  std::string key_fingerprint;
  std::string key_name;
};

/// The one builder of ConnectionClosed: start is the accept time, duration runs from accept to
/// now (the ClientHello wait and the hop to the session's thread included). `owner` is null for
/// connections refused before routing; `refusal_reason` is empty for connections that reached
/// an endpoint.
ConnectionClosed connection_closed(const ConnectionStart& start, const EndpointLabel* owner,
                                   std::uint64_t bytes_in, std::uint64_t bytes_out,
                                   std::string_view close_reason,
                                   std::string_view refusal_reason = {});

/// An SSH session that authenticated.
struct SessionStarted {
  std::uint64_t session_id = 0;  ///< logs show it as s<id>
  std::string client_ip;
  std::uint16_t client_port = 0;
  std::string user;  ///< SSH user name as sent by the client (raw; the writer escapes)
  std::string key_fingerprint;
  std::string key_name;
  SystemTime time{};
};

/// An SSH session that went away (after SessionStarted was emitted for it).
struct SessionEnded {
  std::uint64_t session_id = 0;
  /// client_disconnect, admin_close, key_revoked, idle, shutdown, error, ...
  std::string reason;
  std::string message;  ///< optional human detail (e.g. the admin's message); may be empty
  std::chrono::nanoseconds duration{};
  std::string client_ip;
  std::uint16_t client_port = 0;
  std::string key_fingerprint;
  std::string key_name;
  std::uint64_t connections = 0;  ///< TLS connections relayed over the session's lifetime
  std::uint64_t bytes_in = 0;     ///< summed over those connections
  std::uint64_t bytes_out = 0;
  SystemTime time{};  ///< when it ended
};

/// A tcpip-forward that registered a public name.
struct EndpointCreated {
  std::string endpoint_id;  ///< "ep_12"
  std::string url;          ///< "tls://name[:port]"
  std::uint64_t session_id = 0;
  std::string key_fingerprint;
  std::string key_name;
  bool pool = false;  ///< joined a load-balanced pool rather than owning the name alone
  SystemTime time{};
  bool internal = false;  ///< an internal endpoint (ssh -L / -W only)
};

/// An endpoint that went away.
struct EndpointDeleted {
  std::string endpoint_id;
  std::string url;
  std::uint64_t session_id = 0;
  std::string reason;  ///< cancel_forward, session_ended, ...
  SystemTime time{};
};

/// Receives events. Implementations must be safe to call from any thread and must not throw
/// (a failing sink drops the event and reports it its own way).
class EventSink {
 public:
  virtual ~EventSink();
  virtual void emit(const ConnectionClosed& ev) = 0;
  virtual void emit(const SessionStarted& ev) = 0;
  virtual void emit(const SessionEnded& ev) = 0;
  virtual void emit(const EndpointCreated& ev) = 0;
  virtual void emit(const EndpointDeleted& ev) = 0;
};

/// Discards everything: the default when --event-log is off.
class NullEventSink final : public EventSink {
 public:
  void emit(const ConnectionClosed&) override {}
  void emit(const SessionStarted&) override {}
  void emit(const SessionEnded&) override {}
  void emit(const EndpointCreated&) override {}
  void emit(const EndpointDeleted&) override {}
};

}  // namespace gw::tunnel

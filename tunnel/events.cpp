// Out-of-line anchor for EventSink's vtable (one definition, not one per TU), and the one
// ConnectionClosed builder.
#include "tunnel/events.hpp"

namespace gw::tunnel {

EventSink::~EventSink() = default;

ConnectionClosed connection_closed(const ConnectionStart& start, const EndpointLabel* owner,
                                   std::uint64_t bytes_in, std::uint64_t bytes_out,
                                   std::string_view close_reason, std::string_view refusal_reason) {
  ConnectionClosed ev;
  if (owner != nullptr) {
    ev.endpoint_id = owner->endpoint_id;
    ev.endpoint_url = owner->endpoint_url;
    ev.session_id = owner->session_id;
    ev.key_fingerprint = owner->key_fingerprint;
    ev.key_name = owner->key_name;
  }
  ev.server_name = start.server_name;
  ev.client_ip = start.client_ip;
  ev.client_port = start.client_port;
  ev.start = start.accepted_wall;
  ev.duration = std::chrono::steady_clock::now() - start.accepted_at;
  ev.bytes_in = bytes_in;
  ev.bytes_out = bytes_out;
  ev.close_reason = close_reason;
  ev.refusal_reason = refusal_reason;
  ev.conn_id = start.conn_id;
  ev.internal = start.internal;
  ev.client_session_id = start.client_session_id;
  ev.client_key_fingerprint = start.client_key_fingerprint;
  ev.ingress_node = start.ingress_node;
  return ev;
}

}  // namespace gw::tunnel

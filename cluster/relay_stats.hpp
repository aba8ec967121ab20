// The relay's counters (relaxed atomics: any thread), for /metrics the way sni::RouterStats
// is: relayed connections each way, and every failure by its reason.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "tunnel/bridge.hpp"

namespace gw::cluster {

struct RelayStats {
  // ---- ingress: this node dialed the owner of a visitor's route
  std::atomic<std::uint64_t> relayed_out{0};  ///< status ok: spliced to the owner
  std::atomic<std::uint64_t> resumed{0};      ///< ... of them over a resumed TLS session
  std::atomic<std::uint64_t> retried{0};      ///< "stale" answered, asked the routes again
  /// Failures, by reason (each answered to the visitor as docs/security.md says).
  std::atomic<std::uint64_t> out_unreachable{0};  ///< connect failed or timed out: alert 80
  std::atomic<std::uint64_t> out_handshake{0};    ///< TLS failed (wrong certificate...): alert 80
  std::atomic<std::uint64_t> out_quarantined{0};  ///< the peer failed < 5 s ago: alert 80
  std::atomic<std::uint64_t> out_stale{0};        ///< stale twice (or no route left): alert 112
  std::atomic<std::uint64_t> out_overloaded{0};   ///< the owner said overloaded: alert 80
  std::atomic<std::uint64_t> out_denied{0};       ///< the owner said denied: closed
  std::atomic<std::uint64_t> out_protocol{0};     ///< no or an unknown status byte: alert 80
  /// Warm spares: relay connections opened (and handshaken) before a visitor needs one.
  std::atomic<std::int64_t> spares_idle{0};         ///< open now, waiting for a visitor
  std::atomic<std::uint64_t> spare_used{0};         ///< a visitor went over one (status ok)
  std::atomic<std::uint64_t> spare_redialed{0};     ///< broke before the status: dialed afresh
  std::atomic<std::uint64_t> spare_dead{0};         ///< found closed by the peer while waiting
  std::atomic<std::uint64_t> spare_expired{0};      ///< closed unused after spare_idle
  std::atomic<std::uint64_t> spare_dropped{0};      ///< closed: the peer left the registry
  std::atomic<std::uint64_t> spare_dial_failed{0};  ///< could not be opened (no visitor waited)
  /// Protocol 2: back on the shelf after its visitor's clean end (framed_stream.hpp).
  std::atomic<std::uint64_t> spare_returned{0};
  /// ... closed instead: the shelf already held kMaxIdlePerPeer for that peer.
  std::atomic<std::uint64_t> spare_surplus{0};
  /// Bytes and open connections of the ingress side's bridges (visitor <-> relay).
  std::shared_ptr<tunnel::BridgeStats> out_bridges = std::make_shared<tunnel::BridgeStats>();

  // ---- owner: a peer's relay connection arrived here
  std::atomic<std::uint64_t> relayed_in{0};      ///< status ok: handed to the local endpoint
  std::atomic<std::uint64_t> in_certificate{0};  ///< handshake failed: no or a bad certificate
  std::atomic<std::uint64_t> in_bad_header{0};   ///< malformed or incomplete PROXY v2 header
  std::atomic<std::uint64_t> in_stale{0};        ///< no local endpoint of that session: status 1
  std::atomic<std::uint64_t> in_timeout{0};      ///< no handshake / header in time (RelayConfig)
  std::atomic<std::uint64_t> in_overloaded{0};   ///< over max_pending: closed at once
  /// Protocol 2: a connection whose visitor ended cleanly, waiting for the next header.
  std::atomic<std::uint64_t> in_kept{0};
  std::atomic<std::int64_t> in_pending{0};  ///< relay connections not past their header
};

}  // namespace gw::cluster

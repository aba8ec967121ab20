// The second step of a claim in cluster mode: a name the session won in this node's
// EndpointRegistry must also be won in the cluster registry (cluster/, on etcd) before its
// forward goes live and the user sees the banner. sshd sees only this interface; without
// --cluster-etcd there is none (ServerContext::claim_gate is null) and claims stay synchronous.
// Answers come on the gate's own thread: the session posts them to its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "tunnel/endpoint_registry.hpp"

namespace gw::tunnel {

struct GateClaim {
  std::string name;  ///< normalised; exact or "*.suffix"
  std::string key_fingerprint;
  std::string pool_group;  ///< see ClaimRequest::pool_group
  bool pool = false;
  bool takeover = false;
  bool internal = false;  ///< the endpoint's binding (a pool never mixes them, cluster-wide too)
  std::uint64_t session_id = 0;
};

enum class GateVerdict {
  won,
  refused,        ///< another session (another node) holds it: `message` says so, as today
  same_key_held,  ///< a session of the same key holds it elsewhere: wait, as on one node
  unavailable,    ///< the registry can't be reached: "registry unavailable, retry"
};

struct GateAnswer {
  GateVerdict verdict = GateVerdict::unavailable;
  std::string message;  ///< user-facing, unless won
};

struct GateCallbacks {
  std::function<void(GateAnswer)> decided;  ///< exactly once, unless the ticket dies first
  /// After `won`, at most once: the cluster no longer routes the name here (taken over from
  /// another node, or the lease lost and the name not re-claimable). `why` is user-facing and
  /// follows the endpoint's URL ("was taken over by ..."); `taken_over`: by the same key.
  std::function<void(std::string why, bool taken_over)> lost;
};

/// Holds a claim; destroying it releases the name in the cluster (or cancels the claim).
class GateTicket {
 public:
  virtual ~GateTicket() = default;
};

class ClaimGate {
 public:
  virtual ~ClaimGate() = default;
  /// Thread-safe. Starts the claim; answers through `callbacks`, never inside this call.
  virtual std::unique_ptr<GateTicket> claim(GateClaim request, GateCallbacks callbacks) = 0;
  /// Thread-safe, from the watch cache: what `name` meets on OTHER nodes (as
  /// EndpointRegistry::probe), so a plain conflict is refused at forward time.
  virtual NameState probe(const std::string& name, const std::string& key_fingerprint) const = 0;
  /// Thread-safe: the nesting refusal against other nodes' names ("" if none).
  virtual std::string nesting(const std::string& name,
                              const std::string& key_fingerprint) const = 0;
  /// Thread-safe: endpoints and sessions of a key on OTHER nodes (per-key limits count the
  /// cluster).
  struct Usage {
    std::size_t endpoints = 0;
    std::size_t sessions = 0;
  };
  virtual Usage remote_usage(const std::string& key_fingerprint) const = 0;
};

}  // namespace gw::tunnel

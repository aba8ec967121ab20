// One session's `-R` forwards: what each asked for, the name it holds in the registry, its
// counters, and the one place a forward is claimed and removed (log line, event, per-key count).
// Deliberately not here: whether a forward request is allowed (policy.*), when names are
// claimed and what the user is told (session.cpp), connections (tunnel/bridge.*).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "keys/authorized_keys.hpp"
#include "sshd/policy.hpp"
#include "sshd/server_context.hpp"
#include "sshd/session_handle.hpp"
#include "tunnel/buffer_budget.hpp"
#include "tunnel/claim_gate.hpp"
#include "tunnel/endpoint.hpp"
#include "tunnel/endpoint_registry.hpp"

namespace gw::sshd {

/// One `-R` forward.
struct Forward {
  std::string bind_address;           ///< exactly as the client sent it: channel opens must echo it
  std::uint32_t bind_port;            ///< as sent, or the port we replied for a port-0 request
  std::uint32_t requested_port;       ///< as sent (0 stays 0): what policy decisions see
  std::string hostname;               ///< normalised name held in the registry
  tunnel::Registration registration;  ///< empty until claimed (when the session is ready)
  std::shared_ptr<tunnel::TunnelEndpoint> endpoint;
  std::string id;  ///< "ep_<n>", for the API and events
  std::chrono::system_clock::time_point created_at;
  bool pool = false;
  /// An internal endpoint (tls --internal, or a name under .internal): not routed from the
  /// public port; teammates reach it with ssh -L / -W. Set when claimed.
  bool internal = false;
  /// Another session of the same key holds the name: claimed the moment that one lets go.
  bool waiting = false;
  /// Cluster mode: the cluster registry's hold on the name (released with the forward), and
  /// whether its claim is still in flight (the forward routes nothing until it is won).
  std::unique_ptr<tunnel::GateTicket> gate_ticket;
  bool gate_pending = false;
  std::uint64_t open_connections = 0;
  /// What its connections hold buffered toward their public clients (session.cpp's budget).
  std::shared_ptr<tunnel::BufferBudget> buffered;
  std::uint64_t bytes_in = 0;  ///< over finished connections
  std::uint64_t bytes_out = 0;
};

/// The options a claim is made with (the session's key and its `tls` command).
struct ClaimOptions {
  std::string key_fingerprint;
  std::string key_name;
  bool pool = false;
  bool takeover = false;
  bool internal = false;   ///< tls --internal
  std::string pool_group;  ///< see tunnel::ClaimRequest::pool_group
};

class ForwardTable {
 public:
  using Map = std::unordered_map<std::size_t, Forward>;

  ForwardTable(std::shared_ptr<const ServerContext> ctx, std::uint64_t session_id)
      : ctx_(std::move(ctx)), session_id_(session_id) {}

  /// A tcpip-forward request checked against the key's rights, the limits and the names already
  /// held: the Forward to add (its name not yet claimed, no endpoint yet) under `key`, or the
  /// refusal the user sees.
  struct Prepared {
    std::size_t key = 0;
    std::optional<Forward> forward;
    std::string refusal;
  };
  Prepared prepare(const std::string& address, std::uint32_t port, const keys::AuthorizedKey& key);
  void add(std::size_t key, Forward f);
  /// Why `key`, as authorized_keys now has it, may no longer hold `f` ("" if it still may).
  std::string no_longer_allowed(const Forward& f, const keys::AuthorizedKey& key,
                                const keys::KeyStore& store) const;
  Forward* find(std::size_t key);
  /// The forward a cancel-tcpip-forward names, or end().
  Map::iterator find_bind(std::string_view address, std::uint32_t port);
  /// Every way a forward ends goes through here: log, event, per-key count.
  Map::iterator remove(Map::iterator it, std::string_view reason);
  void remove_all(std::string_view reason);
  /// remove() by forward key; false if there is no such forward.
  bool remove(std::size_t key, std::string_view reason);

  /// Claims f's name; returns the refusal, or "" when claimed (f.id set, event written).
  std::string claim(std::size_t key, Forward& f, const ClaimOptions& options);

  std::string url_for(const Forward& f) const;
  /// The line the user sees for a claimed forward. The client never tells the server where its
  /// -R points, so it names the forward instead.
  std::string banner_for(const Forward& f) const;
  /// Claimed endpoints, for the admin API.
  std::vector<EndpointInfo> infos() const;
  bool any_claimed() const;
  bool any_waiting() const;

  Map::iterator begin() { return forwards_.begin(); }
  Map::iterator end() { return forwards_.end(); }
  std::size_t size() const { return forwards_.size(); }
  bool empty() const { return forwards_.empty(); }

 private:
  /// The policy decision for one request by `key`, against every key in `store`.
  ForwardDecision decide(const std::string& address, std::uint32_t port,
                         const keys::AuthorizedKey& key, const keys::KeyStore* store) const;

  std::shared_ptr<const ServerContext> ctx_;
  std::uint64_t session_id_;
  Map forwards_;
  std::size_t next_key_ = 1;
};

}  // namespace gw::sshd

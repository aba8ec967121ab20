// Which session holds which hostname. A name has one holder, or several when every holder
// asked to pool it (connections are then spread round-robin). A second claim is refused and
// the first keeps working, except a takeover by the same key, which displaces the holders.
// Names of different keys never nest: while a key holds `*.a.test`, no other key may claim a
// name under it (exact names and more specific wildcards win routing, so that would shadow
// the holder's names), and a wildcard over another key's live name is refused the same way.
// Registrations are RAII: the moment a holder drops its Registration, it stops receiving
// connections. Copies under the lock; the caller acts outside it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tunnel/endpoint.hpp"
#include "tunnel/route_table.hpp"

namespace gw::tunnel {

class EndpointRegistry;

/// Owns one claimed name; releases it on destruction.
class Registration {
 public:
  Registration() = default;
  Registration(Registration&& other) noexcept;
  Registration& operator=(Registration&& other) noexcept;
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  ~Registration();

  const std::string& name() const { return name_; }
  explicit operator bool() const { return registry_ != nullptr; }

 private:
  friend class EndpointRegistry;
  Registration(std::shared_ptr<EndpointRegistry> registry, std::string name, std::uint64_t token)
      : registry_(std::move(registry)), name_(std::move(name)), token_(token) {}
  void release();

  std::shared_ptr<EndpointRegistry> registry_;
  std::string name_;
  std::uint64_t token_ = 0;
};

struct ClaimRequest {
  std::string name;  ///< normalised; exact or "*.suffix"
  std::weak_ptr<TunnelEndpoint> endpoint;
  std::string key_fingerprint;
  bool pool = false;      ///< share the name with other holders that also pool
  bool takeover = false;  ///< displace holders of the same key
  /// Pools form only among claims of the same group. Names a key was given explicitly
  /// (permitlisten) use "": any such key may pool them. Names a key may take only because they
  /// are under --domain use the key's fingerprint, so another key can't join its pool and
  /// take a share of its connections.
  std::string pool_group;
  /// An internal endpoint: reached only through the gateway's SSH side (direct-tcpip), never
  /// routed from the public TLS port. Names share one namespace whatever their binding, so a
  /// name always has one answer; a pool never mixes bindings.
  bool internal = false;
};

/// What serves a name, as a lookup saw it (copied under the lock).
struct Route {
  std::shared_ptr<TunnelEndpoint> endpoint;  ///< the holder picked (round-robin); null if none
  bool internal = false;                     ///< the name's binding
  /// The keys of the name's holders (no duplicates): who an internal name belongs to.
  std::vector<std::string> key_fingerprints;
};

struct ClaimResult {
  std::optional<Registration> registration;  ///< set when the claim succeeded
  std::string refusal;                       ///< user-facing, when it did not
  /// Holders a takeover displaced: tell them (TunnelEndpoint::displaced), outside any lock.
  std::vector<std::shared_ptr<TunnelEndpoint>> displaced;
};

/// What a claim would meet, without claiming: lets a session refuse a plain conflict at
/// forward time, before it knows the command's --pool/--takeover.
enum class NameState { free, held_pooled, held_same_key, held };

class EndpointRegistry : public std::enable_shared_from_this<EndpointRegistry> {
 public:
  ClaimResult claim(ClaimRequest request);
  NameState probe(const std::string& name, const std::string& key_fingerprint) const;
  /// Why `name` would nest with another key's live name (see the file comment); "" if not.
  std::string nesting(const std::string& name, const std::string& key_fingerprint) const {
    std::lock_guard lock(mutex_);
    return nesting_refusal(name, key_fingerprint);
  }

  /// Routes a normalised server name: exact match, then the longest wildcard suffix; among
  /// pooled holders, round-robin.
  std::shared_ptr<TunnelEndpoint> find(std::string_view server_name) const {
    return route(server_name).endpoint;
  }
  /// As find(), with the binding and holders of the name that matched: the public listener
  /// refuses internal ones with their own reason, direct-tcpip opens check who may reach them.
  Route route(std::string_view server_name) const;
  /// The holder of the route `server_name` wins whose session_id() is `session_id`, or null:
  /// a relayed connection goes to the pool member the ingress chose, not the next in turn.
  /// Null too when the name's binding is not `internal` (a public visitor's relay never
  /// reaches an internal endpoint, a teammate's never a public one).
  std::shared_ptr<TunnelEndpoint> find_held_by(std::string_view server_name,
                                               std::uint64_t session_id, bool internal) const;

  std::size_t size() const;  ///< names held

 private:
  friend class Registration;
  struct Holder {
    std::weak_ptr<TunnelEndpoint> endpoint;
    std::uint64_t token;
    std::string key_fingerprint;
    bool pool;
    std::string pool_group;
    bool internal;
  };
  struct Entry {
    std::vector<Holder> holders;
    mutable std::size_t next = 0;  ///< round-robin position (under the lock)
  };
  void release(const std::string& name, std::uint64_t token);
  /// Names of two keys never nest: the refusal when `name` is under another key's live
  /// wildcard, or is a wildcard over another key's live name; empty if neither. Under the lock.
  std::string nesting_refusal(const std::string& name, const std::string& key_fingerprint) const;

  mutable std::mutex mutex_;
  RouteTable<Entry> routes_;
  std::uint64_t next_token_ = 1;
};

}  // namespace gw::tunnel

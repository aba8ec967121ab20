// The watch-fed copy of the whole cluster's registry: every node (its relay address) and every
// route, this node's own included, in a tunnel::RouteTable so a lookup applies the single-node
// precedence (exact name, then the most specific wildcard) over the merged table, and pools
// round-robin over all members, local and remote. Fed by a range (reset) and then the watch
// stream (apply); entries that don't parse are skipped and counted, never trusted. Thread-safe:
// the listeners' threads look up, the registry's thread writes. Deliberately pure: no etcd, no
// I/O; the decisions that use it (claims, limits) are in registry.*.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/registry_codec.hpp"
#include "tunnel/cluster_routes.hpp"
#include "tunnel/endpoint_registry.hpp"
#include "tunnel/route_table.hpp"

namespace gw::cluster {

/// One holder of a name, as the cache has it.
struct Holder {
  std::string etcd_key;
  RouteKey key;
  RouteValue value;
  std::int64_t mod_revision = 0;
};

struct NodeRecord {
  std::string id;
  NodeValue value;
  std::int64_t mod_revision = 0;
  std::int64_t lease = 0;
};

/// What one applied event changed, for the registry to act on (its own routes deleted by
/// someone else).
struct CacheChange {
  bool deleted = false;
  std::string etcd_key;
  std::optional<RouteKey> route;  ///< set for route keys
  std::int64_t mod_revision = 0;  ///< of the put, or the delete's revision
};

class RouteCache {
 public:
  explicit RouteCache(std::string local_node) : local_node_(std::move(local_node)) {}

  /// Replaces everything with a range's answer at `revision`. Returns the entries skipped.
  std::size_t reset(const std::vector<KeyValue>& kvs, std::int64_t revision,
                    std::vector<std::string>* warnings = nullptr);
  /// Applies one watch message. Returns the entries skipped; `changes` gets one entry per event.
  std::size_t apply(const WatchMessage& m, std::vector<CacheChange>* changes = nullptr,
                    std::vector<std::string>* warnings = nullptr);

  /// tunnel::ClusterRoutes::find_remote over the cache (see there).
  std::optional<tunnel::RemoteRoute> find_remote(std::string_view server_name);

  /// The holders of exactly `host` (no wildcard matching).
  std::vector<Holder> holders(std::string_view host) const;
  /// Why `name` would nest with a live name of another key on another node (the rule of
  /// tunnel/endpoint_registry.hpp; this node's own names are its EndpointRegistry's to check);
  /// "" if it would not.
  std::string nesting(std::string_view name, std::string_view fpr) const;
  /// What `host` meets on other nodes, as EndpointRegistry::probe answers for this one.
  tunnel::NameState probe_remote(std::string_view host, std::string_view fpr) const;
  /// Routes and distinct sessions of key `fpr` held on nodes other than this one.
  struct Usage {
    std::size_t endpoints = 0;
    std::size_t sessions = 0;
  };
  Usage remote_usage(std::string_view fpr) const;

  std::int64_t revision() const;
  std::size_t routes() const;  ///< holders, all nodes
  std::vector<NodeRecord> nodes() const;
  /// Whether node `id` is in the cache with relay address `relay`.
  bool has_node(std::string_view id, std::string_view relay) const;
  /// Every holder of every name (the admin API's cluster-wide endpoint list).
  std::vector<Holder> all_holders() const;
  const std::string& local_node() const { return local_node_; }

 private:
  struct Entry {
    std::string name;
    std::vector<Holder> holders;
    std::size_t next = 0;  ///< pool round-robin (under the lock)
  };
  /// Adds or replaces one key-value; false if it does not parse. Under the lock.
  bool put_locked(const KeyValue& kv, std::vector<std::string>* warnings,
                  std::optional<RouteKey>* route);
  void erase_locked(std::string_view etcd_key, std::optional<RouteKey>* route);

  const std::string local_node_;
  mutable std::mutex mutex_;
  tunnel::RouteTable<Entry> table_;
  std::map<std::string, NodeRecord, std::less<>> nodes_;
  std::size_t holder_count_ = 0;
  std::int64_t revision_ = 0;
};

}  // namespace gw::cluster

#include "cluster/route_cache.hpp"

#include <algorithm>
#include <set>

#include "common/printable.hpp"
#include "tunnel/claim_decision.hpp"

namespace gw::cluster {

bool RouteCache::put_locked(const KeyValue& kv, std::vector<std::string>* warnings,
                            std::optional<RouteKey>* route) {
  if (auto node = parse_node_key(kv.key)) {
    auto value = parse_node_value(kv.value);
    if (!value) {
      if (warnings != nullptr) {
        warnings->push_back("node value does not parse: key=" + printable(kv.key, 100));
      }
      return false;
    }
    nodes_[*node] = NodeRecord{*node, std::move(*value), kv.mod_revision, kv.lease};
    return true;
  }
  auto key = parse_route_key(kv.key);
  auto value = key ? parse_route_value(kv.value) : std::nullopt;
  if (!key || !value) {
    if (warnings != nullptr) {
      warnings->push_back(std::string(key ? "route value" : "key") +
                          " does not parse: key=" + printable(kv.key, 100));
    }
    return false;
  }
  *route = *key;
  Holder h{kv.key, std::move(*key), std::move(*value), kv.mod_revision};
  Entry* e = table_.find_exact(h.key.host);
  if (e == nullptr) {
    table_.insert(h.key.host, Entry{h.key.host, {}, 0});
    e = table_.find_exact(h.key.host);
  }
  const auto it = std::find_if(e->holders.begin(), e->holders.end(),
                               [&](const Holder& x) { return x.etcd_key == h.etcd_key; });
  if (it != e->holders.end()) {
    *it = std::move(h);
  } else {
    e->holders.push_back(std::move(h));
    ++holder_count_;
  }
  return true;
}

void RouteCache::erase_locked(std::string_view etcd_key, std::optional<RouteKey>* route) {
  if (auto node = parse_node_key(etcd_key)) {
    if (const auto it = nodes_.find(*node); it != nodes_.end()) {
      nodes_.erase(it);
    }
    return;
  }
  auto key = parse_route_key(etcd_key);
  if (!key) {
    return;  // never stored
  }
  *route = *key;
  Entry* e = table_.find_exact(key->host);
  if (e == nullptr) {
    return;
  }
  const auto it = std::find_if(e->holders.begin(), e->holders.end(),
                               [&](const Holder& x) { return x.etcd_key == etcd_key; });
  if (it != e->holders.end()) {
    e->holders.erase(it);
    --holder_count_;
  }
  if (e->holders.empty()) {
    table_.erase(key->host);
  }
}

std::size_t RouteCache::reset(const std::vector<KeyValue>& kvs, std::int64_t revision,
                              std::vector<std::string>* warnings) {
  std::lock_guard lock(mutex_);
  table_ = {};
  nodes_.clear();
  holder_count_ = 0;
  revision_ = revision;
  std::size_t skipped = 0;
  for (const KeyValue& kv : kvs) {
    std::optional<RouteKey> route;
    if (!put_locked(kv, warnings, &route)) {
      ++skipped;
    }
  }
  return skipped;
}

std::size_t RouteCache::apply(const WatchMessage& m, std::vector<CacheChange>* changes,
                              std::vector<std::string>* warnings) {
  std::lock_guard lock(mutex_);
  std::size_t skipped = 0;
  for (const WatchEvent& ev : m.events) {
    CacheChange c;
    c.deleted = ev.deleted;
    c.etcd_key = ev.kv.key;
    c.mod_revision = ev.kv.mod_revision;
    if (ev.deleted) {
      erase_locked(ev.kv.key, &c.route);
    } else if (!put_locked(ev.kv, warnings, &c.route)) {
      ++skipped;
      // A key we can't read any more is as good as gone: drop what we had under it.
      erase_locked(ev.kv.key, &c.route);
      c.deleted = true;
    }
    if (changes != nullptr) {
      changes->push_back(std::move(c));
    }
  }
  revision_ = std::max(revision_, m.revision);
  return skipped;
}

std::optional<tunnel::RemoteRoute> RouteCache::find_remote(std::string_view server_name) {
  std::lock_guard lock(mutex_);
  const Entry* found = table_.find(server_name);
  if (found == nullptr || found->holders.empty()) {
    return std::nullopt;
  }
  Entry& e = *const_cast<Entry*>(found);  // RouteTable::find is const; `next` is ours to move
  const Holder& h = e.holders[e.next++ % e.holders.size()];
  if (h.key.node == local_node_) {
    return std::nullopt;
  }
  const auto node = nodes_.find(h.key.node);
  if (node == nodes_.end() || node->second.value.relay.empty()) {
    return std::nullopt;  // a node without a relay address can't be reached
  }
  return tunnel::RemoteRoute{e.name,        h.key.node,     node->second.value.relay,
                             h.key.session, h.mod_revision, h.value.internal,
                             h.value.fpr};
}

std::vector<Holder> RouteCache::holders(std::string_view host) const {
  std::lock_guard lock(mutex_);
  const Entry* e = table_.find_exact(host);
  return e == nullptr ? std::vector<Holder>{} : e->holders;
}

std::string RouteCache::nesting(std::string_view name, std::string_view fpr) const {
  std::lock_guard lock(mutex_);
  std::string refusal;
  // Under another key's wildcard: the most specific one above decides.
  table_.for_each_wildcard_above(name, [&](std::string_view wildcard, const Entry& e) {
    if (!refusal.empty()) {
      return;
    }
    for (const Holder& h : e.holders) {
      if (h.value.fpr != fpr && h.key.node != local_node_) {
        refusal = tunnel::nested_under(name, wildcard, " (on node " + h.key.node + ")");
        return;
      }
    }
  });
  if (!refusal.empty() || !name.starts_with("*.")) {
    return refusal;
  }
  // A wildcard over another key's names: a scan, but only at claim time.
  const std::string_view suffix = name.substr(1);  // ".a.test"
  table_.for_each([&](std::string_view other, const Entry& e) {
    if (!refusal.empty() || other == name || !other.ends_with(suffix)) {
      return;
    }
    for (const Holder& h : e.holders) {
      if (h.value.fpr != fpr && h.key.node != local_node_) {
        refusal = tunnel::nested_over(name, other, " (on node " + h.key.node + ")");
        return;
      }
    }
  });
  return refusal;
}

tunnel::NameState RouteCache::probe_remote(std::string_view host, std::string_view fpr) const {
  std::lock_guard lock(mutex_);
  const Entry* e = table_.find_exact(host);
  bool any = false, all_pool = true, all_same_key = true;
  if (e != nullptr) {
    for (const Holder& h : e->holders) {
      if (h.key.node == local_node_) {
        continue;
      }
      any = true;
      all_pool = all_pool && h.key.kind == RouteKind::pool;
      all_same_key = all_same_key && h.value.fpr == fpr;
    }
  }
  if (!any) {
    return tunnel::NameState::free;
  }
  if (all_pool) {
    return tunnel::NameState::held_pooled;
  }
  return all_same_key ? tunnel::NameState::held_same_key : tunnel::NameState::held;
}

RouteCache::Usage RouteCache::remote_usage(std::string_view fpr) const {
  std::lock_guard lock(mutex_);
  Usage u;
  std::set<std::pair<std::string, std::string>> sessions;
  table_.for_each([&](std::string_view, const Entry& e) {
    for (const Holder& h : e.holders) {
      if (h.value.fpr == fpr && h.key.node != local_node_) {
        ++u.endpoints;
        sessions.emplace(h.key.node, h.key.session);
      }
    }
  });
  u.sessions = sessions.size();
  return u;
}

std::int64_t RouteCache::revision() const {
  std::lock_guard lock(mutex_);
  return revision_;
}

std::size_t RouteCache::routes() const {
  std::lock_guard lock(mutex_);
  return holder_count_;
}

std::vector<NodeRecord> RouteCache::nodes() const {
  std::lock_guard lock(mutex_);
  std::vector<NodeRecord> out;
  for (const auto& [id, n] : nodes_) {
    out.push_back(n);
  }
  return out;
}

bool RouteCache::has_node(std::string_view id, std::string_view relay) const {
  std::lock_guard lock(mutex_);
  const auto it = nodes_.find(id);
  return it != nodes_.end() && it->second.value.relay == relay;
}

std::vector<Holder> RouteCache::all_holders() const {
  std::lock_guard lock(mutex_);
  std::vector<Holder> out;
  table_.for_each([&](std::string_view, const Entry& e) {
    out.insert(out.end(), e.holders.begin(), e.holders.end());
  });
  return out;
}

}  // namespace gw::cluster

// RouteTable<V>: hostname → V with the router's precedence: an exact name first, then the
// most specific (longest) wildcard suffix, then nothing. `*.example.com` matches names at
// any depth below example.com but not example.com itself. A lookup costs one hash probe per
// label of the host, whatever the number of routes (no scan over entries).
// Deliberately pure and unsynchronised (EndpointRegistry holds the lock), and it does not
// normalise or validate names: keys and hosts arrive as tunnel::Hostname strings.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace gw::tunnel {

template <class V>
class RouteTable {
 public:
  /// Adds `name` (exact `app.example.com` or wildcard `*.example.com`, already normalised).
  /// Returns false, changing nothing, if that exact key is taken or the key is empty or a
  /// wildcard with nothing after `*.`.
  bool insert(std::string_view name, V value) {
    Map* map = nullptr;
    const std::string_view key = split_key(name, map);
    if (key.empty()) {
      return false;
    }
    return map->try_emplace(std::string(key), std::move(value)).second;
  }

  /// Removes the route stored under exactly `name` (a wildcard by its `*.` form). Returns
  /// whether there was one.
  bool erase(std::string_view name) {
    Map* map = nullptr;
    const std::string_view key = split_key(name, map);
    if (key.empty()) {
      return false;
    }
    const auto it = map->find(key);
    if (it == map->end()) {
      return false;
    }
    map->erase(it);
    return true;
  }

  /// The value stored under exactly the key `name` (no wildcard matching), or nullptr.
  const V* find_exact(std::string_view name) const {
    return const_cast<RouteTable*>(this)->find_exact(name);
  }
  V* find_exact(std::string_view name) {
    Map* map = nullptr;
    const std::string_view key = split_key(name, map);
    if (key.empty()) {
      return nullptr;
    }
    const auto it = map->find(key);
    return it == map->end() ? nullptr : &it->second;
  }

  /// Routes a normalised `host` (lowercase, no trailing dot): exact entry, else the longest
  /// wildcard suffix with at least one label in front of it, else nullptr. The pointer is
  /// valid until the table changes.
  const V* find(std::string_view host) const {
    if (host.empty()) {
      return nullptr;
    }
    if (const auto it = exact_.find(host); it != exact_.end()) {
      return &it->second;
    }
    // Suffixes after each dot, longest first: a.b.example.com → b.example.com, example.com, com.
    // A dot at position 0 would leave an empty leftmost label, which matches nothing.
    for (std::size_t dot = host.find('.'); dot != std::string_view::npos;
         dot = host.find('.', dot + 1)) {
      if (dot == 0) {
        continue;
      }
      if (const auto it = wildcard_.find(host.substr(dot + 1)); it != wildcard_.end()) {
        return &it->second;
      }
    }
    return nullptr;
  }

  /// Calls f(name, value) for every route, wildcards in their `*.` form. Order unspecified.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [name, v] : exact_) {
      f(std::string_view(name), v);
    }
    for (const auto& [suffix, v] : wildcard_) {
      f("*." + suffix, v);
    }
  }

  /// The wildcard routes strictly above `name` (for `*.a.b`: `*.b` and up, not `*.a.b` itself),
  /// most specific first: f(wildcard name, value).
  template <class F>
  void for_each_wildcard_above(std::string_view name, F&& f) const {
    std::string_view base = name.starts_with("*.") ? name.substr(2) : name;
    for (std::size_t dot = base.find('.'); dot != std::string_view::npos;
         dot = base.find('.', dot + 1)) {
      if (dot == 0) {
        continue;
      }
      const std::string_view suffix = base.substr(dot + 1);
      if (const auto it = wildcard_.find(suffix); it != wildcard_.end()) {
        f("*." + std::string(suffix), it->second);
      }
    }
  }

  std::size_t size() const noexcept { return exact_.size() + wildcard_.size(); }
  bool empty() const noexcept { return size() == 0; }

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using Map = std::unordered_map<std::string, V, Hash, std::equal_to<>>;

  /// The map a key belongs in and the string it is stored under (the suffix for `*.x`).
  /// Returns an empty view for keys that can't be stored.
  std::string_view split_key(std::string_view name, Map*& map) {
    if (name.starts_with("*.")) {
      map = &wildcard_;
      return name.substr(2);
    }
    map = &exact_;
    return name;
  }

  Map exact_;     // app.example.com → V
  Map wildcard_;  // example.com → V, for the key *.example.com
};

}  // namespace gw::tunnel

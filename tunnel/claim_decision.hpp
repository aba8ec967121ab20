// What a claim for a name meets, decided once for both registries: the single node's
// EndpointRegistry (holders in memory) and the cluster registry (holders in etcd). Pure; the
// words are the user's refusal messages, so a name held on another node is refused exactly as
// one held on this node.
#pragma once

#include <string>
#include <string_view>

namespace gw::tunnel {

/// The current holders of one name, summarised against the claimant.
struct HoldersView {
  bool empty = true;
  bool all_pool = false;
  bool all_same_key = false;    ///< every holder is the claimant's key
  bool all_same_group = false;  ///< every holder's pool_group is the claimant's
};

enum class ClaimVerdict {
  add,      ///< nothing there, or a pool to join: add the claimant beside the holders
  replace,  ///< takeover by the same key: the holders are displaced
  refuse,
};

struct ClaimDecision {
  ClaimVerdict verdict = ClaimVerdict::refuse;
  std::string refusal;  ///< user-facing, when refused
};

inline ClaimDecision decide_claim(const std::string& name, bool pool, bool takeover,
                                  const HoldersView& h) {
  if (h.empty || (pool && h.all_pool && h.all_same_group)) {
    return {ClaimVerdict::add, {}};
  }
  if (takeover && h.all_same_key) {
    return {ClaimVerdict::replace, {}};
  }
  std::string why;
  if (takeover) {
    why = name + " is held by another key: --takeover only moves a name " +
          "between sessions of the same key";
  } else if (pool && h.all_pool) {
    why = name + " is pooled by another key, and only keys given the name " +
          "in authorized_keys (permitlisten) may pool it together";
  } else if (pool) {
    why = name + " is in use by a session that did not pass --pool";
  } else if (h.all_pool) {
    why = name + " is pooled by other sessions: add --pool to share it";
  } else if (h.all_same_key) {
    why = name + " is in use by another session of your key: add --takeover to move it here";
  } else {
    why = name + " is already in use by another session (pick another name)";
  }
  return {ClaimVerdict::refuse, std::move(why)};
}

/// A pool never mixes bindings: a pooled claim (without --takeover) of `name` held with the
/// other binding is refused with this. `internal`: the claimant's binding.
inline std::string mixed_binding(std::string_view name, bool internal) {
  return std::string(name) + " is held as " + (internal ? "a public" : "an internal") +
         " endpoint: a pool's members must all be internal (tls --internal, or a name under "
         ".internal) or all public";
}

/// The nesting rule's refusals (endpoint_registry.hpp): `name` under another key's `wildcard`,
/// or the wildcard `name` over another key's `held` name. `where` is "" or " (on node X)".
inline std::string nested_under(std::string_view name, std::string_view wildcard,
                                std::string_view where = {}) {
  return std::string(name) + " is under " + std::string(wildcard) +
         ", which another key's session holds" + std::string(where) + ": pick a name outside it";
}
inline std::string nested_over(std::string_view name, std::string_view held,
                               std::string_view where = {}) {
  return std::string(name) + " would cover " + std::string(held) +
         ", which another key's session holds" + std::string(where) + ": pick a narrower name";
}

}  // namespace gw::tunnel

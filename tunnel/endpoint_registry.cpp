#include "tunnel/endpoint_registry.hpp"

#include <algorithm>

#include "tunnel/claim_decision.hpp"

namespace gw::tunnel {

Registration::Registration(Registration&& other) noexcept
    : registry_(std::move(other.registry_)), name_(std::move(other.name_)), token_(other.token_) {
  other.registry_.reset();
}

Registration& Registration::operator=(Registration&& other) noexcept {
  if (this != &other) {
    release();
    registry_ = std::move(other.registry_);
    name_ = std::move(other.name_);
    token_ = other.token_;
    other.registry_.reset();
  }
  return *this;
}

Registration::~Registration() { release(); }

void Registration::release() {
  if (registry_) {
    registry_->release(name_, token_);
    registry_.reset();
  }
}

NameState EndpointRegistry::probe(const std::string& name,
                                  const std::string& key_fingerprint) const {
  std::lock_guard lock(mutex_);
  if (!nesting_refusal(name, key_fingerprint).empty()) {
    return NameState::held;  // refused at forward time, like a plain conflict
  }
  const Entry* e = routes_.find_exact(name);
  if (e == nullptr || e->holders.empty()) {
    return NameState::free;
  }
  const auto all = [&](auto pred) {
    return std::all_of(e->holders.begin(), e->holders.end(), pred);
  };
  if (all([](const Holder& h) { return h.pool; })) {
    return NameState::held_pooled;
  }
  if (all([&](const Holder& h) { return h.key_fingerprint == key_fingerprint; })) {
    return NameState::held_same_key;
  }
  return NameState::held;
}

std::string EndpointRegistry::nesting_refusal(const std::string& name,
                                              const std::string& key_fingerprint) const {
  const auto other_key = [&](const Entry& e) {
    return std::any_of(e.holders.begin(), e.holders.end(),
                       [&](const Holder& h) { return h.key_fingerprint != key_fingerprint; });
  };
  std::string refusal;
  routes_.for_each_wildcard_above(name, [&](const std::string& wildcard, const Entry& e) {
    if (refusal.empty() && other_key(e)) {
      refusal = nested_under(name, wildcard);
    }
  });
  if (refusal.empty() && name.starts_with("*.")) {
    const std::string under = name.substr(1);  // ".a.test" for "*.a.test"
    routes_.for_each([&](std::string_view held, const Entry& e) {
      if (refusal.empty() && held != name && held.ends_with(under) && other_key(e)) {
        refusal = nested_over(name, held);
      }
    });
  }
  return refusal;
}

ClaimResult EndpointRegistry::claim(ClaimRequest request) {
  ClaimResult result;
  std::lock_guard lock(mutex_);
  if (std::string why = nesting_refusal(request.name, request.key_fingerprint); !why.empty()) {
    result.refusal = std::move(why);
    return result;
  }
  // A name has one binding, so a pool never mixes them (a takeover by the same key may change
  // it: the holders go).
  if (const Entry* held = routes_.find_exact(request.name);
      held != nullptr && !held->holders.empty() && request.pool && !request.takeover &&
      held->holders.front().internal != request.internal) {
    result.refusal = mixed_binding(request.name, request.internal);
    return result;
  }
  const std::uint64_t token = next_token_++;
  Holder holder{std::move(request.endpoint), token,           request.key_fingerprint, request.pool,
                request.pool_group,          request.internal};
  Entry* e = routes_.find_exact(request.name);
  if (e == nullptr || e->holders.empty()) {
    if (e == nullptr) {
      Entry fresh;
      fresh.holders.push_back(std::move(holder));
      routes_.insert(request.name, std::move(fresh));
    } else {
      e->holders.push_back(std::move(holder));
    }
    result.registration = Registration(shared_from_this(), request.name, token);
    return result;
  }
  HoldersView view;
  view.empty = false;
  view.all_pool =
      std::all_of(e->holders.begin(), e->holders.end(), [](const Holder& h) { return h.pool; });
  view.all_same_key = std::all_of(e->holders.begin(), e->holders.end(), [&](const Holder& h) {
    return h.key_fingerprint == request.key_fingerprint;
  });
  view.all_same_group = std::all_of(e->holders.begin(), e->holders.end(), [&](const Holder& h) {
    return h.pool_group == request.pool_group;
  });
  ClaimDecision decision = decide_claim(request.name, request.pool, request.takeover, view);
  switch (decision.verdict) {
    case ClaimVerdict::replace:
      for (auto& h : e->holders) {
        if (auto ep = h.endpoint.lock()) {
          result.displaced.push_back(std::move(ep));
        }
      }
      e->holders.clear();
      [[fallthrough]];
    case ClaimVerdict::add:
      e->holders.push_back(std::move(holder));
      result.registration = Registration(shared_from_this(), request.name, token);
      break;
    case ClaimVerdict::refuse:
      result.refusal = std::move(decision.refusal);
      break;
  }
  return result;
}

Route EndpointRegistry::route(std::string_view server_name) const {
  Route out;
  std::lock_guard lock(mutex_);
  const Entry* e = routes_.find(server_name);
  if (e == nullptr || e->holders.empty()) {
    return out;
  }
  out.internal = e->holders.front().internal;  // one binding per name (see claim())
  for (const Holder& h : e->holders) {
    if (std::find(out.key_fingerprints.begin(), out.key_fingerprints.end(), h.key_fingerprint) ==
        out.key_fingerprints.end()) {
      out.key_fingerprints.push_back(h.key_fingerprint);
    }
  }
  // Round-robin over pooled holders, skipping any whose session is already gone.
  for (std::size_t tries = 0; tries < e->holders.size(); ++tries) {
    const Holder& h = e->holders[e->next++ % e->holders.size()];
    if (auto ep = h.endpoint.lock()) {
      out.endpoint = std::move(ep);
      return out;
    }
  }
  return out;
}

std::shared_ptr<TunnelEndpoint> EndpointRegistry::find_held_by(std::string_view server_name,
                                                               std::uint64_t session_id,
                                                               bool internal) const {
  std::vector<std::shared_ptr<TunnelEndpoint>> holders;
  {
    std::lock_guard lock(mutex_);
    const Entry* e = routes_.find(server_name);
    // Even if a stale route at the ingress names a session that now holds the name with the
    // other binding.
    if (e == nullptr || e->holders.empty() || e->holders.front().internal != internal) {
      return nullptr;
    }
    for (const Holder& h : e->holders) {
      if (auto ep = h.endpoint.lock()) {
        holders.push_back(std::move(ep));
      }
    }
  }
  // session_id() is the endpoint's own code: called outside the lock.
  for (auto& ep : holders) {
    if (ep->session_id() == session_id) {
      return ep;
    }
  }
  return nullptr;
}

std::size_t EndpointRegistry::size() const {
  std::lock_guard lock(mutex_);
  return routes_.size();
}

void EndpointRegistry::release(const std::string& name, std::uint64_t token) {
  std::lock_guard lock(mutex_);
  // Only the holder that claimed may release: a Registration displaced by a takeover must
  // not remove its successor.
  Entry* e = routes_.find_exact(name);
  if (e == nullptr) {
    return;
  }
  std::erase_if(e->holders, [&](const Holder& h) { return h.token == token; });
  if (e->holders.empty()) {
    routes_.erase(name);
  }
}

}  // namespace gw::tunnel

#include "tunnel/endpoint_registry.hpp"

namespace gw::tunnel {

Registration::Registration(Registration&& other) noexcept
    : registry_(std::move(other.registry_)),
      name_(std::move(other.name_)),
      token_(other.token_) {
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

std::optional<Registration> EndpointRegistry::claim(const std::string& name,
                                                    std::weak_ptr<TunnelEndpoint> endpoint) {
  std::lock_guard lock(mutex_);
  const std::uint64_t token = next_token_++;
  if (!routes_.insert(name, Entry{std::move(endpoint), token})) {
    return std::nullopt;
  }
  return Registration(shared_from_this(), name, token);
}

std::shared_ptr<TunnelEndpoint> EndpointRegistry::find(std::string_view server_name) const {
  std::lock_guard lock(mutex_);
  const Entry* e = routes_.find(server_name);
  return e ? e->endpoint.lock() : nullptr;
}

std::size_t EndpointRegistry::size() const {
  std::lock_guard lock(mutex_);
  return routes_.size();
}

void EndpointRegistry::release(const std::string& name, std::uint64_t token) {
  std::lock_guard lock(mutex_);
  // Only the holder that claimed the name may release it: a stale Registration (after a
  // takeover, later) must not remove its successor.
  const Entry* e = routes_.find_exact(name);
  if (e && e->token == token) {
    routes_.erase(name);
  }
}

}  // namespace gw::tunnel

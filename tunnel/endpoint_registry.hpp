// Which session holds which hostname. A hostname belongs to one endpoint; a second claim is
// refused and the first keeps working. Registrations are RAII: the moment an owner drops
// its Registration, the name routes nowhere. Deliberately no pooling yet.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

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

class EndpointRegistry : public std::enable_shared_from_this<EndpointRegistry> {
 public:
  /// Claims `name` (normalised; exact or "*.suffix") for `endpoint`. Returns an empty
  /// optional when another endpoint holds it.
  std::optional<Registration> claim(const std::string& name, std::weak_ptr<TunnelEndpoint> endpoint);

  /// Routes a normalised server name: exact match, then the longest wildcard suffix.
  /// Copies under the lock; the caller acts on the result outside it.
  std::shared_ptr<TunnelEndpoint> find(std::string_view server_name) const;

  std::size_t size() const;

 private:
  friend class Registration;
  struct Entry {
    std::weak_ptr<TunnelEndpoint> endpoint;
    std::uint64_t token;
  };
  void release(const std::string& name, std::uint64_t token);

  mutable std::mutex mutex_;
  RouteTable<Entry> routes_;
  std::uint64_t next_token_ = 1;
};

}  // namespace gw::tunnel

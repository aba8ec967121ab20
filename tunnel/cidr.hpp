// IPv4/IPv6 CIDR sets and the allow/deny rule of `tls --allow-cidr/--deny-cidr`. Pure: no
// sockets. IPv4-mapped IPv6 clients (::ffff:a.b.c.d, from dual-stack listeners) match IPv4
// CIDRs. Deliberately no host names: a rule about who may connect must not depend on DNS.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gw::tunnel {

class Cidr {
 public:
  /// Parses "addr/len" or a bare address (/32, /128). nullopt when it is not one.
  static std::optional<Cidr> parse(std::string_view text);
  bool contains(const boost::asio::ip::address& address) const;
  std::string str() const;

 private:
  Cidr(boost::asio::ip::address network, unsigned prefix) : network_(network), prefix_(prefix) {}
  boost::asio::ip::address network_;
  unsigned prefix_;
};

/// Who may connect to an endpoint: denied if any deny CIDR matches; otherwise allowed if
/// there is no allow CIDR or one matches.
struct AccessRule {
  std::vector<Cidr> allow;
  std::vector<Cidr> deny;

  bool empty() const { return allow.empty() && deny.empty(); }
  /// True when `address` may connect; otherwise `*why` says which rule refused it.
  bool permits(const boost::asio::ip::address& address, std::string* why) const;
};

}  // namespace gw::tunnel

// IPv4/IPv6 CIDR sets and the allow/deny rule of `tls --allow-cidr/--deny-cidr`. Pure: no
// sockets. IPv4-mapped IPv6 clients (::ffff:a.b.c.d, from dual-stack listeners) match IPv4
// CIDRs. Deliberately no host names: a rule about who may connect must not depend on DNS.
// In common because both keys/ (authorized_keys from=) and the `tls` command's rules use it.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gw {

class Cidr {
 public:
  /// Parses "addr/len" or a bare address (/32, /128). nullopt when it is not one: no zone ids
  /// (`%eth0`), no leading zeros or signs in the length, and an IPv4-mapped IPv6 prefix
  /// (`::ffff:10.0.0.0/104`, stored as 10.0.0.0/8) must be /96 or longer. Bits past the prefix
  /// are allowed (`10.0.0.1/8` contains 10.x); see has_host_bits().
  /// The one CIDR validator of the project: sshd::parse_cidr calls it.
  static std::optional<Cidr> parse(std::string_view text);
  bool contains(const boost::asio::ip::address& address) const;
  /// As contains(), but an IPv6 prefix also covers IPv4 clients through their v4-mapped form
  /// (::ffff:a.b.c.d): `::/0` is every client. The `tls --allow-cidr/--deny-cidr` rules use this
  /// (a user denying ::/0 means everyone); from= keeps OpenSSH's family-strict contains().
  bool covers(const boost::asio::ip::address& address) const;
  /// True for `10.0.0.1/8`: OpenSSH refuses such a from= entry ("inconsistent mask length").
  bool has_host_bits() const;
  /// "network/len", lower-case, v4-mapped prefixes as IPv4 ("10.0.0.0/8").
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

}  // namespace gw

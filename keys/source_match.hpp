// `from="pattern-list"` of authorized_keys: may this key be used from this client address?
// Entries are OpenSSH host patterns (`*`, `?`) matched against the client's IP as text, or
// CIDRs (`10.0.0.0/8`, `2001:db8::/32`); `!` negates. Any negated match refuses, otherwise
// any positive match allows, no match refuses. Deliberately no reverse DNS: OpenSSH only
// matches names with UseDNS, and a gateway must not stall an auth on a resolver.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <string>

#include "keys/authorized_keys.hpp"

namespace gw::keys {

/// True when `options.from` is empty or admits `client`; otherwise `*why` (if not null) names
/// the reason: excluded by a `!` entry, in no entry, or an invalid entry (an empty element or a
/// bad CIDR, which refuses everyone as OpenSSH does; parse_authorized_key_line never yields one).
/// A v4-mapped IPv6 client is matched as its IPv4 address.
bool source_allowed(const KeyOptions& options, const boost::asio::ip::address& client,
                    std::string* why);

}  // namespace gw::keys

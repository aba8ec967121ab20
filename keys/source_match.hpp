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

/// True when `options.from` is empty or admits `client`; otherwise `*why` names the reason.
bool source_allowed(const KeyOptions& options, const boost::asio::ip::address& client,
                    std::string* why);

}  // namespace gw::keys

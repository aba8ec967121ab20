// from= evaluation: globs over the address text, CIDRs, negation, v4-mapped clients.
#include "keys/source_match.hpp"

#include <gtest/gtest.h>

namespace gw::keys {
namespace {

bool allowed(std::vector<std::string> from, const char* client) {
  KeyOptions o;
  o.from = std::move(from);
  std::string why;
  return source_allowed(o, boost::asio::ip::make_address(client), &why);
}

// Proves: each from= form against matching and non-matching clients.
TEST(SourceMatch, Table) {
  struct Case {
    const char* label;
    std::vector<std::string> from;
    const char* client;
    bool expect;
  } cases[] = {
      {"no from= allows all", {}, "203.0.113.9", true},
      {"cidr match", {"10.0.0.0/8"}, "10.1.2.3", true},
      {"cidr miss", {"10.0.0.0/8"}, "11.1.2.3", false},
      {"glob match", {"192.0.2.*"}, "192.0.2.44", true},
      {"glob miss", {"192.0.2.*"}, "192.0.3.44", false},
      {"list, second matches", {"10.0.0.0/8,192.0.2.1"}, "192.0.2.1", true},
      {"negation wins", {"10.0.0.0/8,!10.9.9.9"}, "10.9.9.9", false},
      {"negated cidr wins", {"*,!10.0.0.0/8"}, "10.9.9.9", false},
      {"negation only: no positive match", {"!10.9.9.9"}, "10.1.1.1", false},
      {"ipv6 cidr", {"2001:db8::/32"}, "2001:db8::5", true},
      {"ipv6 miss", {"2001:db8::/32"}, "2001:db9::5", false},
      {"v4-mapped client", {"10.0.0.0/8"}, "::ffff:10.1.2.3", true},
      {"bad cidr never matches", {"10.0.0.0/99"}, "10.1.2.3", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(allowed(c.from, c.client), c.expect) << c.label;
  }
}

// Proves: the refusal names the address and the list.
TEST(SourceMatch, Reason) {
  KeyOptions o;
  o.from = {"10.0.0.0/8"};
  std::string why;
  EXPECT_FALSE(source_allowed(o, boost::asio::ip::make_address("192.0.2.1"), &why));
  EXPECT_EQ(why, "192.0.2.1 is not in from=\"10.0.0.0/8\"");
}

}  // namespace
}  // namespace gw::keys

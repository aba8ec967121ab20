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
      {"bad cidr refuses", {"10.0.0.0/99"}, "10.1.2.3", false},
      {"bad negated cidr refuses everyone (OpenSSH fails closed)",
       {"*", "!10.0.0.0/99"},
       "192.0.2.1",
       false},
      {"cidr with host bits refuses", {"10.0.0.1/8"}, "10.1.2.3", false},
      {"empty element refuses", {""}, "10.1.2.3", false},
      {"bare ! refuses", {"!"}, "10.1.2.3", false},
      {"trailing comma in a hand-built element refuses", {"*,"}, "10.1.2.3", false},
      {"separate elements as the parser stores them",
       {"10.0.0.0/8", "!10.9.9.9"},
       "10.9.9.9",
       false},
      {"negation order does not matter", {"!10.9.9.9", "10.0.0.0/8"}, "10.9.9.9", false},
      {"negation leaves others allowed", {"!10.9.9.9", "10.0.0.0/8"}, "10.9.9.8", true},
      {"exact address", {"192.0.2.1"}, "192.0.2.1", true},
      {"exact address is not a prefix", {"192.0.2.1"}, "192.0.2.10", false},
      {"? matches one character", {"192.0.2.?"}, "192.0.2.7", true},
      {"? is not two characters", {"192.0.2.?"}, "192.0.2.77", false},
      {"star matches all", {"*"}, "2001:db8::1", true},
      {"ipv6 glob on compressed text", {"2001:db8::*"}, "2001:0db8:0:0::9", true},
      {"ipv6 glob is case-insensitive", {"2001:DB8::*"}, "2001:db8::9", true},
      {"v4-mapped client matches v4 glob", {"10.1.2.*"}, "::ffff:10.1.2.3", true},
      {"v4-mapped cidr entry", {"::ffff:10.0.0.0/104"}, "10.1.2.3", true},
      {"host names never match: no reverse DNS", {"*.corp.test"}, "10.1.2.3", false},
      {"ipv4 cidr does not match ipv6", {"0.0.0.0/0"}, "2001:db8::1", false},
      {"::/0 matches ipv6 only", {"::/0"}, "10.1.2.3", false},
      {"a negated address written long-hand still excludes",
       {"*", "!0:0:0:0:0:0:0:1"},
       "::1",
       false},
      {"a negated address written with a zero group still excludes", {"*", "!0::1"}, "::1", false},
      {"addresses compare as addresses, not text", {"0:0::1"}, "::1", true},
      {"an address entry doesn't match another address", {"0::2"}, "::1", false},
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
  o.from = {"*", "!192.0.2.0/24"};
  EXPECT_FALSE(source_allowed(o, boost::asio::ip::make_address("192.0.2.1"), &why));
  EXPECT_EQ(why, "192.0.2.1 is excluded by from=\"!192.0.2.0/24\"");
  o.from = {"10.0.0.0/99"};
  EXPECT_FALSE(source_allowed(o, boost::asio::ip::make_address("10.0.0.1"), &why));
  EXPECT_EQ(why, "from=\"10.0.0.0/99\" has an invalid entry");
}

}  // namespace
}  // namespace gw::keys

// Cidr and AccessRule: parsing, IPv4/IPv6 containment, v4-mapped clients, deny-wins.
#include "tunnel/cidr.hpp"

#include <gtest/gtest.h>

namespace gw::tunnel {
namespace {

boost::asio::ip::address ip(const char* s) { return boost::asio::ip::make_address(s); }

// Proves: each CIDR form parses or is refused as expected.
TEST(Cidr, Parse) {
  struct Case {
    const char* text;
    const char* normalised;  // nullptr: refused
  } cases[] = {
      {"10.0.0.0/8", "10.0.0.0/8"},
      {"192.0.2.7", "192.0.2.7/32"},
      {"2001:db8::/32", "2001:db8::/32"},
      {"::1", "::1/128"},
      {"::ffff:10.0.0.0/104", "10.0.0.0/8"},
      {"10.0.0.0/33", nullptr},
      {"2001:db8::/129", nullptr},
      {"10.0.0.0/", nullptr},
      {"10.0.0.0/x", nullptr},
      {"host.example/8", nullptr},
      {"", nullptr},
  };
  for (const auto& c : cases) {
    const auto parsed = Cidr::parse(c.text);
    if (c.normalised == nullptr) {
      EXPECT_FALSE(parsed) << c.text;
    } else {
      ASSERT_TRUE(parsed) << c.text;
      EXPECT_EQ(parsed->str(), c.normalised) << c.text;
    }
  }
}

// Proves: containment at and around prefix boundaries, in both families, and v4-mapped.
TEST(Cidr, Contains) {
  const auto v4 = *Cidr::parse("192.168.1.0/25");
  EXPECT_TRUE(v4.contains(ip("192.168.1.0")));
  EXPECT_TRUE(v4.contains(ip("192.168.1.127")));
  EXPECT_FALSE(v4.contains(ip("192.168.1.128")));
  EXPECT_TRUE(v4.contains(ip("::ffff:192.168.1.5")));
  EXPECT_FALSE(v4.contains(ip("2001:db8::1")));
  const auto v6 = *Cidr::parse("2001:db8::/33");
  EXPECT_TRUE(v6.contains(ip("2001:db8:7fff::1")));
  EXPECT_FALSE(v6.contains(ip("2001:db8:8000::1")));
  EXPECT_FALSE(v6.contains(ip("192.168.1.1")));
  EXPECT_TRUE(Cidr::parse("0.0.0.0/0")->contains(ip("203.0.113.9")));
}

// Proves: deny wins over allow; with allows, only they pass; the reason names the rule.
TEST(AccessRule, DenyWinsAllowListsOnly) {
  AccessRule rule;
  EXPECT_TRUE(rule.permits(ip("203.0.113.9"), nullptr));
  rule.allow.push_back(*Cidr::parse("203.0.113.0/24"));
  rule.deny.push_back(*Cidr::parse("203.0.113.9"));
  std::string why;
  EXPECT_FALSE(rule.permits(ip("203.0.113.9"), &why));
  EXPECT_EQ(why, "in --deny-cidr 203.0.113.9/32");
  EXPECT_TRUE(rule.permits(ip("203.0.113.10"), nullptr));
  EXPECT_FALSE(rule.permits(ip("198.51.100.1"), &why));
  EXPECT_EQ(why, "not in --allow-cidr");
}

}  // namespace
}  // namespace gw::tunnel

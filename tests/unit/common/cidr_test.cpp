// Cidr and AccessRule: parsing, IPv4/IPv6 containment, v4-mapped clients, deny-wins.
#include "common/cidr.hpp"

#include <gtest/gtest.h>

namespace gw {
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
      {"/8", nullptr},
      {"10.0.0.0/08", nullptr},
      {"10.0.0.0/-1", nullptr},
      {"10.0.0.0/+8", nullptr},
      {"10.0.0.0/1000", nullptr},
      {"10.0.0.0/8/8", nullptr},
      {"010.0.0.0/8", nullptr},
      {"10.0.0/8", nullptr},
      {"256.0.0.0/8", nullptr},
      {"1.2.3.4 ", nullptr},
      {"fe80::1%eth0/64", nullptr},
      {"fe80::1%eth0", nullptr},
      {"::ffff:10.0.0.0/64", nullptr},
      {"0.0.0.0/0", "0.0.0.0/0"},
      {"::/0", "::/0"},
      {"2001:DB8::/32", "2001:db8::/32"},
      {"10.0.0.1/8", "10.0.0.1/8"},
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

// Proves: covers() lets an IPv6 prefix take IPv4 clients by their v4-mapped form (::/0 is
// everyone, a real v6 prefix no v4 client), while contains() stays family-strict (from=).
TEST(Cidr, Covers) {
  const auto all6 = *Cidr::parse("::/0");
  EXPECT_TRUE(all6.covers(ip("203.0.113.9")));
  EXPECT_FALSE(all6.contains(ip("203.0.113.9")));
  EXPECT_TRUE(all6.covers(ip("2001:db8::1")));
  EXPECT_FALSE(Cidr::parse("2001:db8::/32")->covers(ip("203.0.113.9")));
  EXPECT_TRUE(Cidr::parse("::ffff:0:0/96")->covers(ip("10.1.2.3")));
  EXPECT_TRUE(Cidr::parse("10.0.0.0/8")->covers(ip("10.1.2.3")));
}

// Proves: bits past the prefix are reported (from= refuses them, as OpenSSH does).
TEST(Cidr, HostBits) {
  struct Case {
    const char* text;
    bool host_bits;
  } cases[] = {
      {"10.0.0.0/8", false},         {"10.0.0.1/8", true},           {"10.0.0.1", false},
      {"192.168.1.128/25", false},   {"192.168.1.129/25", true},     {"0.0.0.0/0", false},
      {"1.0.0.0/0", true},           {"2001:db8::/32", false},       {"2001:db8::1/32", true},
      {"2001:db8:8000::/33", false}, {"::ffff:10.0.0.0/104", false}, {"::ffff:10.0.0.1/104", true},
  };
  for (const auto& c : cases) {
    const auto parsed = Cidr::parse(c.text);
    ASSERT_TRUE(parsed) << c.text;
    EXPECT_EQ(parsed->has_host_bits(), c.host_bits) << c.text;
  }
}

// Proves: the rule's decision for each shape of allow/deny list, in both families.
TEST(AccessRule, Table) {
  struct Case {
    const char* label;
    std::vector<const char*> allow, deny;
    const char* client;
    bool permitted;
  } cases[] = {
      {"no rules: everyone", {}, {}, "198.51.100.1", true},
      {"no rules: v6 too", {}, {}, "2001:db8::1", true},
      {"deny only: denied", {}, {"198.51.100.0/24"}, "198.51.100.1", false},
      {"deny only: others pass", {}, {"198.51.100.0/24"}, "198.51.101.1", true},
      {"allow only: allowed", {"10.0.0.0/8"}, {}, "10.2.3.4", true},
      {"allow only: others refused", {"10.0.0.0/8"}, {}, "11.2.3.4", false},
      {"allow v4 only: v6 refused", {"10.0.0.0/8"}, {}, "2001:db8::1", false},
      {"allow v4: v4-mapped passes", {"10.0.0.0/8"}, {}, "::ffff:10.2.3.4", true},
      {"deny v4: v4-mapped denied", {}, {"10.0.0.0/8"}, "::ffff:10.2.3.4", false},
      {"deny wins inside allow", {"10.0.0.0/8"}, {"10.1.0.0/16"}, "10.1.2.3", false},
      {"allow outside deny", {"10.0.0.0/8"}, {"10.1.0.0/16"}, "10.2.2.3", true},
      {"deny wins over same allow", {"10.0.0.0/8"}, {"10.0.0.0/8"}, "10.2.2.3", false},
      {"several allows, second matches", {"10.0.0.0/8", "2001:db8::/32"}, {}, "2001:db8::7", true},
      {"allow everything, deny one", {"0.0.0.0/0", "::/0"}, {"2001:db8::7"}, "2001:db8::7", false},
  };
  for (const auto& c : cases) {
    AccessRule rule;
    for (const char* a : c.allow) {
      rule.allow.push_back(*Cidr::parse(a));
    }
    for (const char* d : c.deny) {
      rule.deny.push_back(*Cidr::parse(d));
    }
    std::string why;
    EXPECT_EQ(rule.permits(ip(c.client), &why), c.permitted) << c.label;
    EXPECT_EQ(why.empty(), c.permitted) << c.label << ": a refusal always says why";
  }
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
}  // namespace gw

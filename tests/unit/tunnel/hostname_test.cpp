// Hostname::parse: a labelled table of accepted names (with their normal form) and refused names
// (with their exact hostname_errc), plus suffix()/is_under().
#include "tunnel/hostname.hpp"

#include <gtest/gtest.h>

#include <string>

namespace gw::tunnel {
namespace {

struct Good {
  const char* label;
  std::string input;
  std::string normal;
};

struct Bad {
  const char* label;
  std::string input;
  hostname_errc error;
};

// Accepted names normalise to lowercase without the trailing dot.
TEST(Hostname, AcceptsAndNormalises) {
  const Good cases[] = {
      {"plain", "app.example.com", "app.example.com"},
      {"upper case", "APP.Example.COM", "app.example.com"},
      {"trailing dot", "app.example.com.", "app.example.com"},
      {"single label", "localhost", "localhost"},
      {"digits in labels", "123.4ab.example", "123.4ab.example"},
      {"inner hyphens", "my-app.x--y.example", "my-app.x--y.example"},
      {"punycode a-label", "xn--bcher-kva.example", "xn--bcher-kva.example"},
      {"wildcard", "*.alice.test", "*.alice.test"},
      {"wildcard upper + dot", "*.ALICE.Test.", "*.alice.test"},
      {"63-char label", std::string(63, 'a') + ".test", std::string(63, 'a') + ".test"},
      {"253 chars",
       std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
           std::string(61, 'd'),
       std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
           std::string(61, 'd')},
      {"hex-looking but not numeric", "0xzz.test", "0xzz.test"},
      {"numeric labels, alpha tld", "1.2.3.4.example", "1.2.3.4.example"},
  };
  for (const auto& c : cases) {
    auto h = Hostname::parse(c.input);
    ASSERT_TRUE(h.has_value()) << c.label << ": " << h.error().message();
    EXPECT_EQ(h->str(), c.normal) << c.label;
  }
}

// Each refused name yields its own errc.
TEST(Hostname, RefusesWithSpecificError) {
  const Bad cases[] = {
      {"empty", "", hostname_errc::empty},
      {"only a dot", ".", hostname_errc::empty},
      {"254 chars",
       std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
           std::string(62, 'd'),
       hostname_errc::too_long},
      {"leading dot", ".example.com", hostname_errc::empty_label},
      {"double dot", "a..b", hostname_errc::empty_label},
      {"two trailing dots", "a.b..", hostname_errc::empty_label},
      {"64-char label", std::string(64, 'a') + ".test", hostname_errc::label_too_long},
      {"underscore", "my_app.test", hostname_errc::bad_character},
      {"space", "my app.test", hostname_errc::bad_character},
      {"slash", "a/b.test", hostname_errc::bad_character},
      {"NUL byte", std::string("a\0b.test", 8), hostname_errc::bad_character},
      {"unicode u-label",
       "b\xc3\xbc"
       "cher.example",
       hostname_errc::bad_character},
      {"leading hyphen", "-app.test", hostname_errc::label_hyphen},
      {"trailing hyphen", "app-.test", hostname_errc::label_hyphen},
      {"IPv4", "10.0.0.1", hostname_errc::ip_literal},
      {"IPv4 trailing dot", "10.0.0.1.", hostname_errc::ip_literal},
      {"IPv4 short form", "127.1", hostname_errc::ip_literal},
      {"IPv4 hex form", "0x7f.0.0.1", hostname_errc::ip_literal},
      {"bare number", "2130706433", hostname_errc::ip_literal},
      {"IPv6", "::1", hostname_errc::ip_literal},
      {"IPv6 full", "2001:db8::1", hostname_errc::ip_literal},
      {"bracketed IPv6", "[::1]", hostname_errc::ip_literal},
      {"host:port", "app.test:443", hostname_errc::ip_literal},
      {"numeric tld", "app.123", hostname_errc::all_numeric_tld},
      {"five numeric labels", "1.2.3.4.5", hostname_errc::all_numeric_tld},
      {"bare star", "*", hostname_errc::wildcard_position},
      {"star in second label", "a.*.test", hostname_errc::wildcard_position},
      {"partial star", "a*.test", hostname_errc::wildcard_position},
      {"double star", "**.test", hostname_errc::wildcard_position},
      {"two wildcards", "*.*.test", hostname_errc::wildcard_position},
      {"star last", "test.*", hostname_errc::wildcard_position},
  };
  for (const auto& c : cases) {
    auto h = Hostname::parse(c.input);
    ASSERT_FALSE(h.has_value()) << c.label << " accepted as " << h->str();
    EXPECT_EQ(h.error(), make_error_code(c.error)) << c.label << ": " << h.error().message();
  }
}

// allow_wildcard=false refuses a well-formed wildcard but still classifies a misplaced one.
TEST(Hostname, WildcardCanBeDisallowed) {
  auto w = Hostname::parse("*.a.test", false);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error(), hostname_errc::wildcard_not_allowed);
  auto m = Hostname::parse("a.*.test", false);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error(), hostname_errc::wildcard_position);
  EXPECT_TRUE(Hostname::parse("a.test", false).has_value());
}

// Messages are user-facing sentences.
TEST(Hostname, MessagesAreHuman) {
  EXPECT_EQ(make_error_code(hostname_errc::empty_label).message(), "hostname has an empty label");
  EXPECT_EQ(make_error_code(hostname_errc::ip_literal).message(),
            "IP addresses are not hostnames: use a DNS name");
  EXPECT_STREQ(make_error_code(hostname_errc::empty).category().name(), "gw.tunnel.hostname");
}

// suffix() strips exactly the wildcard label.
TEST(Hostname, Suffix) {
  EXPECT_EQ(Hostname::parse("*.a.b")->suffix(), "a.b");
  EXPECT_EQ(Hostname::parse("x.a.b")->suffix(), "x.a.b");
  EXPECT_TRUE(Hostname::parse("*.a.b")->is_wildcard());
  EXPECT_FALSE(Hostname::parse("x.a.b")->is_wildcard());
}

// is_under() is a strict, label-aligned subdomain test.
TEST(Hostname, IsUnder) {
  const auto d = *Hostname::parse("tunnel.example.com");
  EXPECT_TRUE(Hostname::parse("k3x9p2.tunnel.example.com")->is_under(d));
  EXPECT_TRUE(Hostname::parse("a.b.tunnel.example.com")->is_under(d));
  EXPECT_TRUE(Hostname::parse("*.tunnel.example.com")->is_under(d));
  EXPECT_FALSE(Hostname::parse("tunnel.example.com")->is_under(d));
  EXPECT_FALSE(Hostname::parse("xtunnel.example.com")->is_under(d));
  EXPECT_FALSE(Hostname::parse("example.com")->is_under(d));
  EXPECT_FALSE(Hostname::parse("a.tunnel.example.org")->is_under(d));
  EXPECT_FALSE(d.is_under(*Hostname::parse("*.example.com")));
}

// Equality and hashing see only the normal form.
TEST(Hostname, EqualityUsesNormalForm) {
  EXPECT_EQ(*Hostname::parse("A.Test."), *Hostname::parse("a.test"));
  EXPECT_EQ(std::hash<Hostname>{}(*Hostname::parse("A.Test.")),
            std::hash<Hostname>{}(*Hostname::parse("a.test")));
}

}  // namespace
}  // namespace gw::tunnel

// authorized_keys parsing: real keys from ssh-keygen with their `ssh-keygen -lf` fingerprints,
// labelled tables of options and of refused lines (each with its exact errc), and file loading
// that skips bad lines with "file:line" warnings.
#include "keys/authorized_keys.hpp"

#include <gtest/gtest.h>

#include <string>

namespace gw::keys {
namespace {

// Generated once with `ssh-keygen -t ... -N '' -f /tmp/x`; fingerprints from `ssh-keygen -lf`.
constexpr std::string_view kEd25519 =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMV9gy6hXv6MeBoeSaOpMdXERl4ie+UBLs8F3bg6BHTJ alice@laptop";
constexpr std::string_view kEd25519Blob =
    "AAAAC3NzaC1lZDI1NTE5AAAAIMV9gy6hXv6MeBoeSaOpMdXERl4ie+UBLs8F3bg6BHTJ";
constexpr std::string_view kEd25519Fp = "SHA256:KAScQre1PCT1YNL+wTa1uz/kq4d0m9Jt6UT/nMqvMDk";
constexpr std::string_view kEcdsa256 =
    "ecdsa-sha2-nistp256 "
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOqN13bcT81lciZmNgVnYLI5LmMAN+m421igRRqq/"
    "in0znjHuM+5IZW8Rq28YJNMyNfo6gcT+3iZIp4HiKBMtl0= bob";
constexpr std::string_view kEcdsa256Fp = "SHA256:V5lgPxzi+yQ2e1WB7tJ+WVEQOg3s1P0wTMOleI9JnW8";
constexpr std::string_view kEcdsa384 =
    "ecdsa-sha2-nistp384 "
    "AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBEeBY0Yo45rrySRBybIUKqFDGaylknhrIAwzIBEIHd"
    "2"
    "vmRu/2hGOCDzJ9INBQqIY84ARgp+TOof7hkhoSExFfgPoV92bTmqIdI71vFwTq+jsUjfI3APRHk4snwBouQtlBg== "
    "e384";
constexpr std::string_view kEcdsa384Fp = "SHA256:dHjeKZ+MIgpu+BXLXNwVlBfveHIYSArGun2Xon/584s";
constexpr std::string_view kEcdsa521 =
    "ecdsa-sha2-nistp521 "
    "AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAACJrvOyaG1DS3leFgdx9/"
    "K45f2kJXHp8AjUzdXrqbE"
    "B7VH7q6Op9qjaWAH018oH5YcWWBYiLyhDFpZRQuTfkUlAQH/9W2Y5lS/JtFq/vS9ixRetWleif3x1bBPBbICv4dn5T7/"
    "JqnZcBzCTBSDy/KhFpyz0gGpe8FE7PBb1ueVK7rDoQ== e521";
constexpr std::string_view kEcdsa521Fp = "SHA256:4CnBseqLzz2SgwV8Fuz70xHVE1vre8LwQn2uUg4ml6Q";
constexpr std::string_view kRsa =
    "ssh-rsa "
    "AAAAB3NzaC1yc2EAAAADAQABAAABAQDLKTdAmtioOvj8AdAURnnW+igCgd4jX485SU2cAJQPhRe8244+"
    "QSPjvCWsXDrSoRn"
    "tUoFi91ZjxRHli5RbAcPDGtLst09xo/"
    "bkpkW4VeLjdjn6O2qXTNUN8N5fQtJdm6cDTgu5E3U02wlVTuz0XkK8Q9Rb9ZlUxL9"
    "KUTG6Hegz5UCdkePyfB1dK/"
    "VKcu4LVt6CCAyviJYnHI0KkvAYla4HiSxoZnpaZLiKwTSXPP2F0E2T7b03YvwiCG6RNyXMp2L"
    "eI9fcekCJWr6b2d1pFmBN2J4Jmrub7ShalrgptBWN4NJnX9kN8wIUrne5uAr20HVSndPdO7STA/nRu1oT9ZcP carol "
    "rsa "
    "key";
constexpr std::string_view kRsaFp = "SHA256:CJLfqtegFz3IR3LWcUnkraWoF3ed4c3oFMez1VuQxEU";

std::string with(std::string_view options, std::string_view key = kEd25519) {
  return std::string(options) + " " + std::string(key);
}

// Every supported key type parses, and its fingerprint equals ssh-keygen's.
TEST(AuthorizedKeys, RealKeysAndFingerprints) {
  struct Case {
    const char* label;
    std::string_view line;
    std::string_view type;
    std::string_view fingerprint;
    std::string_view comment;
  };
  const Case cases[] = {
      {"ed25519", kEd25519, "ssh-ed25519", kEd25519Fp, "alice@laptop"},
      {"ecdsa 256", kEcdsa256, "ecdsa-sha2-nistp256", kEcdsa256Fp, "bob"},
      {"ecdsa 384", kEcdsa384, "ecdsa-sha2-nistp384", kEcdsa384Fp, "e384"},
      {"ecdsa 521", kEcdsa521, "ecdsa-sha2-nistp521", kEcdsa521Fp, "e521"},
      {"rsa, comment with spaces", kRsa, "ssh-rsa", kRsaFp, "carol rsa key"},
  };
  for (const auto& c : cases) {
    auto k = parse_authorized_key_line(c.line);
    ASSERT_TRUE(k.has_value()) << c.label << ": " << k.error().message();
    EXPECT_EQ(k->type, c.type) << c.label;
    EXPECT_EQ(k->fingerprint, c.fingerprint) << c.label;
    EXPECT_EQ(k->comment, c.comment) << c.label;
    EXPECT_TRUE(k->options.port_forwarding) << c.label;
    EXPECT_TRUE(k->options.permit_listen.empty()) << c.label;
  }
  auto k = parse_authorized_key_line(kEd25519);
  EXPECT_EQ(k->blob_base64, kEd25519Blob);
}

// Whitespace, tabs, CR and a missing comment are tolerated.
TEST(AuthorizedKeys, Layout) {
  auto k = parse_authorized_key_line("  \tssh-ed25519\t" + std::string(kEd25519Blob) + "  \r");
  ASSERT_TRUE(k.has_value()) << k.error().message();
  EXPECT_EQ(k->comment, "");
  EXPECT_EQ(k->fingerprint, kEd25519Fp);
}

// Options are parsed into KeyOptions, in order, as OpenSSH applies them.
TEST(AuthorizedKeys, Options) {
  {
    auto k = parse_authorized_key_line(
        with(R"(permitlisten="*.alice.test:443",permitlisten="app.bob.test:*")"));
    ASSERT_TRUE(k.has_value()) << k.error().message();
    ASSERT_EQ(k->options.permit_listen.size(), 2u);
    EXPECT_EQ(k->options.permit_listen[0].host_pattern, "*.alice.test");
    EXPECT_EQ(k->options.permit_listen[0].port, 443);
    EXPECT_EQ(k->options.permit_listen[1].host_pattern, "app.bob.test");
    EXPECT_FALSE(k->options.permit_listen[1].port.has_value());
    EXPECT_TRUE(k->options.port_forwarding);
  }
  {
    auto k = parse_authorized_key_line(with("restrict"));
    ASSERT_TRUE(k.has_value());
    EXPECT_TRUE(k->options.restricted);
    EXPECT_FALSE(k->options.port_forwarding);
  }
  {
    auto k = parse_authorized_key_line(with(R"(restrict,port-forwarding,permitlisten="a.test:0")"));
    ASSERT_TRUE(k.has_value());
    EXPECT_TRUE(k->options.restricted);
    EXPECT_TRUE(k->options.port_forwarding);
    EXPECT_EQ(k->options.permit_listen.at(0).port, 0);
  }
  {
    auto k = parse_authorized_key_line(with("port-forwarding,RESTRICT"));
    ASSERT_TRUE(k.has_value());
    EXPECT_FALSE(k->options.port_forwarding);
  }
  {
    auto k =
        parse_authorized_key_line(with("no-port-forwarding,no-pty,no-agent-forwarding,"
                                       "no-X11-forwarding,no-user-rc"));
    ASSERT_TRUE(k.has_value()) << k.error().message();
    EXPECT_FALSE(k->options.port_forwarding);
    EXPECT_FALSE(k->options.restricted);
  }
  {
    auto k = parse_authorized_key_line(with(R"(from="10.0.0.0/8,*.corp.test,!bad.corp.test")"));
    ASSERT_TRUE(k.has_value());
    EXPECT_EQ(k->options.from,
              (std::vector<std::string>{"10.0.0.0/8", "*.corp.test", "!bad.corp.test"}));
  }
  {
    // Valid CIDRs of both families (negated too), and a bare address, are accepted.
    auto k = parse_authorized_key_line(
        with(R"(from="2001:db8::/32,!10.1.0.0/16,192.0.2.7,::ffff:10.0.0.0/104")"));
    ASSERT_TRUE(k.has_value()) << k.error().message();
    EXPECT_EQ(k->options.from.size(), 4u);
  }
  {
    auto k = parse_authorized_key_line(with(R"(permitlisten="quoted\"name:443")"));
    ASSERT_TRUE(k.has_value());
    EXPECT_EQ(k->options.permit_listen.at(0).host_pattern, "quoted\"name");
  }
  {
    auto k = parse_authorized_key_line(with(R"(from="a b.test")"));  // space inside quotes
    ASSERT_TRUE(k.has_value()) << k.error().message();
    EXPECT_EQ(k->options.from.at(0), "a b.test");
    EXPECT_EQ(k->comment, "alice@laptop");
  }
}

// expiry-time is UTC, with 8, 12 or 14 digits and an optional Z.
TEST(AuthorizedKeys, ExpiryTime) {
  struct Case {
    const char* value;
    std::int64_t unix;
  };
  const Case cases[] = {
      {"20250101", 1735689600},     {"202501010000", 1735689600},   {"20250101000000Z", 1735689600},
      {"202402291230", 1709209800}, {"20301231235959", 1924991999}, {"19700101", 0},
  };
  for (const auto& c : cases) {
    auto k = parse_authorized_key_line(with(std::string("expiry-time=\"") + c.value + "\""));
    ASSERT_TRUE(k.has_value()) << c.value << ": " << k.error().message();
    EXPECT_EQ(k->options.expiry_unix, c.unix) << c.value;
  }
  KeyOptions o;
  o.expiry_unix = 100;
  EXPECT_FALSE(is_expired(o, 99));
  EXPECT_TRUE(is_expired(o, 100));
  EXPECT_FALSE(is_expired(KeyOptions{}, 1LL << 40));
}

// Every broken line is refused with its own errc (fail closed).
TEST(AuthorizedKeys, RefusedLines) {
  struct Case {
    const char* label;
    std::string line;
    errc error;
  };
  const std::string ed(kEd25519);
  const Case cases[] = {
      {"blank", "   ", errc::no_key},
      {"comment", "# ssh-ed25519 AAAA", errc::no_key},
      {"trailing comma", "restrict, " + ed, errc::stray_comma},
      {"leading comma", ",restrict " + ed, errc::stray_comma},
      {"double comma", "restrict,,no-pty " + ed, errc::stray_comma},
      {"bare comma", ", " + ed, errc::stray_comma},
      {"unknown option", "no-such-option " + ed, errc::unknown_option},
      {"command= not supported", R"(command="/bin/true" )" + ed, errc::unknown_option},
      {"permitopen port only", R"(permitopen="443" )" + ed, errc::bad_permitopen},
      {"permitopen empty host", R"(permitopen=":443" )" + ed, errc::bad_permitopen},
      {"permitopen port text", R"(permitopen="a.internal:https" )" + ed, errc::bad_permitopen},
      {"permitopen without value", "permitopen " + ed, errc::missing_value},
      {"cert-authority not supported", "cert-authority " + ed, errc::unknown_option},
      {"text after quote", R"(from="a"x )" + ed, errc::unknown_option},
      {"duplicate from", R"(from="a",from="b" )" + ed, errc::duplicate_option},
      {"duplicate expiry", R"(expiry-time="20300101",expiry-time="20300101" )" + ed,
       errc::duplicate_option},
      {"permitlisten without value", "permitlisten " + ed, errc::missing_value},
      {"unquoted value", "permitlisten=a.test:443 " + ed, errc::unquoted_value},
      {"empty value after =", "from= " + ed, errc::unquoted_value},
      {"unterminated quote", R"(permitlisten="a.test:443 )" + ed, errc::unterminated_quote},
      {"escaped quote does not close", R"(from="a\" )" + ed, errc::unterminated_quote},
      {"flag with value", R"(restrict="yes" )" + ed, errc::unexpected_value},
      {"permitlisten port only", R"(permitlisten="443" )" + ed, errc::bad_permitlisten},
      {"permitlisten empty host", R"(permitlisten=":443" )" + ed, errc::bad_permitlisten},
      {"permitlisten no port", R"(permitlisten="a.test:" )" + ed, errc::bad_permitlisten},
      {"permitlisten port too big", R"(permitlisten="a.test:65536" )" + ed, errc::bad_permitlisten},
      {"permitlisten port text", R"(permitlisten="a.test:https" )" + ed, errc::bad_permitlisten},
      {"permitlisten signed port", R"(permitlisten="a.test:+443" )" + ed, errc::bad_permitlisten},
      {"expiry too short", R"(expiry-time="2025" )" + ed, errc::bad_expiry_time},
      {"expiry 13 digits", R"(expiry-time="2025010112000" )" + ed, errc::bad_expiry_time},
      {"expiry month 13", R"(expiry-time="20251301" )" + ed, errc::bad_expiry_time},
      {"expiry feb 29 non-leap", R"(expiry-time="20250229" )" + ed, errc::bad_expiry_time},
      {"expiry hour 24", R"(expiry-time="202501012400" )" + ed, errc::bad_expiry_time},
      {"expiry with dashes", R"(expiry-time="2025-01-01" )" + ed, errc::bad_expiry_time},
      {"from empty", R"(from="" )" + ed, errc::bad_from},
      {"from trailing comma", R"(from="a," )" + ed, errc::bad_from},
      {"from bare negation", R"(from="!" )" + ed, errc::bad_from},
      {"from cidr prefix too long", R"(from="10.0.0.0/33" )" + ed, errc::bad_from},
      {"from negated bad cidr", R"(from="*,!10.0.0.0/99" )" + ed, errc::bad_from},
      {"from cidr host bits (OpenSSH: inconsistent mask)", R"(from="10.0.0.1/8" )" + ed,
       errc::bad_from},
      {"from ipv6 host bits", R"(from="2001:db8::1/32" )" + ed, errc::bad_from},
      {"from cidr zone id", R"(from="fe80::%eth0/64" )" + ed, errc::bad_from},
      {"from glob with slash", R"(from="10.*/8" )" + ed, errc::bad_from},
      {"options only", "restrict", errc::missing_key_type},
      {"options then spaces", "restrict   ", errc::missing_key_type},
      {"dss", "ssh-dss AAAAB3NzaC1kc3M= old", errc::unsupported_key_type},
      {"security key", "sk-ssh-ed25519@openssh.com AAAA x", errc::unsupported_key_type},
      {"certificate", "ssh-ed25519-cert-v01@openssh.com AAAA x", errc::unsupported_key_type},
      {"options then bad type", "restrict ssh-dss AAAA", errc::unsupported_key_type},
      {"type without blob", "ssh-ed25519", errc::missing_key_blob},
      {"type without blob, spaces", "restrict ssh-ed25519   ", errc::missing_key_blob},
      {"base64 bad char", "ssh-ed25519 AAAA*AAA", errc::bad_base64},
      {"base64 bad length", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE", errc::bad_base64},
      {"base64 pad in middle", "ssh-ed25519 AA==AAAA", errc::bad_base64},
      {"base64 unpadded",
       "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMV9gy6hXv6MeBoeSaOpMdXERl4ie+UBLs8F3Q",
       errc::bad_base64},
      {"declared rsa, blob ed25519", "ssh-rsa " + std::string(kEd25519Blob),
       errc::key_type_mismatch},
      {"declared nistp384, blob nistp256",
       "ecdsa-sha2-nistp384 " + std::string(kEcdsa256.substr(20, kEcdsa256.size() - 24)),
       errc::key_type_mismatch},
      {"curve differs from type",
       "ecdsa-sha2-nistp256 "
       "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAzODQAAABBBOqN13bcT81lciZmNgVnYLI5LmMAN+"
       "m421igRRqq/"
       "in0znjHuM+5IZW8Rq28YJNMyNfo6gcT+3iZIp4HiKBMtl0=",
       errc::key_type_mismatch},
      {"truncated blob",
       "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMV9gy6hXv6MeBoeSaOpMdXERl4ie+UBLs8F3Q==",
       errc::malformed_blob},
      {"trailing bytes in blob",
       "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMV9gy6hXv6MeBoeSaOpMdXERl4ie+UBLs8F3bg6BHTJAA==",
       errc::malformed_blob},
      {"type string only", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", errc::malformed_blob},
      {"length past end", "ssh-ed25519 /////3NzaA==", errc::malformed_blob},
  };
  for (const auto& c : cases) {
    auto k = parse_authorized_key_line(c.line);
    ASSERT_FALSE(k.has_value()) << c.label;
    EXPECT_EQ(k.error(), make_error_code(c.error))
        << c.label << ": got \"" << k.error().message() << "\"";
  }
}

// permitopen="host:port" has permitlisten's grammar and its own list; like OpenSSH it does not
// undo restrict (only port-forwarding after restrict does).
TEST(AuthorizedKeys, PermitOpen) {
  auto k = parse_authorized_key_line(with(
      R"(permitopen="app.internal:443",permitopen="*.team.internal:*",permitlisten="a.test:443")"));
  ASSERT_TRUE(k.has_value()) << k.error().message();
  ASSERT_EQ(k->options.permit_open.size(), 2u);
  EXPECT_EQ(k->options.permit_open[0].host_pattern, "app.internal");
  EXPECT_EQ(k->options.permit_open[0].port, 443);
  EXPECT_EQ(k->options.permit_open[1].host_pattern, "*.team.internal");
  EXPECT_FALSE(k->options.permit_open[1].port.has_value());
  EXPECT_EQ(k->options.permit_listen.size(), 1u);
  auto r = parse_authorized_key_line(with(R"(restrict,permitopen="app.internal:443")"));
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->options.port_forwarding);
  EXPECT_EQ(r->options.permit_open.size(), 1u);
  auto re =
      parse_authorized_key_line(with(R"(restrict,port-forwarding,permitopen="app.internal:443")"));
  ASSERT_TRUE(re.has_value());
  EXPECT_TRUE(re->options.port_forwarding);
  std::string opts;
  for (std::size_t i = 0; i <= kMaxPermitListen; ++i) {
    opts += (i ? "," : "") + std::string(R"(permitopen="a.internal:443")");
  }
  auto capped = parse_authorized_key_line(with(opts));
  ASSERT_FALSE(capped.has_value());
  EXPECT_EQ(capped.error(), errc::too_many_permitopen);
}

// parse_key_options works on a bare options string (for `snigate keys add`).
TEST(AuthorizedKeys, BareOptions) {
  auto o = parse_key_options(R"(restrict,port-forwarding,permitlisten="*.a.test:443")");
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->permit_listen.size(), 1u);
  EXPECT_EQ(parse_key_options("").error(), errc::stray_comma);
  EXPECT_EQ(parse_key_options("restrict,").error(), errc::stray_comma);
}

// The permitlisten list is capped like OpenSSH's SSH_AUTHOPT_PERMIT_MAX.
TEST(AuthorizedKeys, PermitListenCap) {
  std::string opts;
  for (std::size_t i = 0; i <= kMaxPermitListen; ++i) {
    opts += (i ? "," : "") + std::string(R"(permitlisten="a.test:443")");
  }
  auto k = parse_authorized_key_line(with(opts));
  ASSERT_FALSE(k.has_value());
  EXPECT_EQ(k.error(), errc::too_many_permitlisten);
}

// A file loads its good lines, skips bad ones with "file:line: ..." warnings, ignores comments.
TEST(AuthorizedKeys, FileSkipsBadLinesWithWarnings) {
  const std::string content = "# team keys\n\n" + std::string(kEd25519) + "\r\n" + "restrict, " +
                              std::string(kRsa) + "\n" + "bogus-opt " + std::string(kRsa) + "\n" +
                              R"(permitlisten="*.bob.test:443" )" + std::string(kEcdsa256);
  const auto r = parse_authorized_keys(content, "/etc/snigate/authorized_keys");
  ASSERT_EQ(r.keys.size(), 2u);
  EXPECT_EQ(r.keys[0].loc, "/etc/snigate/authorized_keys:3");
  EXPECT_EQ(r.keys[0].comment, "alice@laptop");
  EXPECT_EQ(r.keys[1].loc, "/etc/snigate/authorized_keys:6");
  EXPECT_EQ(r.keys[1].fingerprint, kEcdsa256Fp);
  ASSERT_EQ(r.warnings.size(), 2u);
  EXPECT_EQ(r.warnings[0],
            "/etc/snigate/authorized_keys:4: line skipped: empty option (stray comma)");
  EXPECT_EQ(r.warnings[1],
            "/etc/snigate/authorized_keys:5: line skipped: unknown key option (\"bogus-opt\")");
}

// Error messages are readable sentences from the gw.keys category.
TEST(AuthorizedKeys, Messages) {
  EXPECT_STREQ(make_error_code(errc::unknown_option).category().name(), "gw.keys");
  for (int e = 1; e <= static_cast<int>(errc::malformed_blob); ++e) {
    EXPECT_NE(make_error_code(static_cast<errc>(e)).message(), "unknown authorized_keys error");
  }
}

}  // namespace
}  // namespace gw::keys

// sshd policy: `tls` command parsing (every refusal's exact text, CIDR validation) and forward
// decisions, including the bypass attempts a hostile key holder would try.
#include "sshd/policy.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "common/ascii.hpp"

namespace gw::sshd {
namespace {

constexpr std::string_view kNotOverSsh =
    " is not supported over SSH: TLS passes through to your upstream\n";

// Empty, `tls` and option-only commands give the defaults or the options asked for.
TEST(ParseCommand, Accepts) {
  for (const char* line : {"", "   ", "tls", " tls  "}) {
    const auto r = parse_command(line);
    ASSERT_TRUE(r.command.has_value()) << line << ": " << r.error;
    EXPECT_TRUE(r.error.empty());
    EXPECT_FALSE(r.command->pool || r.command->takeover || r.command->verbose || r.command->help);
    EXPECT_TRUE(r.command->allow_cidr.empty() && r.command->deny_cidr.empty());
  }
  const auto r = parse_command(
      "tls --pool --takeover --verbose --help --allow-cidr 10.0.0.0/8 "
      "--allow-cidr=2001:db8::/32 --deny-cidr '10.1.0.0/16' --deny-cidr \"192.0.2.7\"");
  ASSERT_TRUE(r.command.has_value()) << r.error;
  EXPECT_TRUE(r.command->pool && r.command->takeover && r.command->verbose && r.command->help);
  EXPECT_EQ(r.command->allow_cidr, (std::vector<std::string>{"10.0.0.0/8", "2001:db8::/32"}));
  EXPECT_EQ(r.command->deny_cidr, (std::vector<std::string>{"10.1.0.0/16", "192.0.2.7/32"}));

  const auto implied = parse_command("--verbose");
  ASSERT_TRUE(implied.command.has_value()) << implied.error;
  EXPECT_TRUE(implied.command->verbose);
}

// Each refusal's exact user-facing text.
TEST(ParseCommand, Refusals) {
  struct Case {
    const char* label;
    const char* line;
    std::string error;
  };
  const std::string help = tls_help_text();
  const Case cases[] = {
      {"terminate-at edge", "tls --terminate-at edge",
       "snigate: --terminate-at" + std::string(kNotOverSsh)},
      {"terminate-at agent =", "tls --terminate-at=agent",
       "snigate: --terminate-at" + std::string(kNotOverSsh)},
      {"terminate-at upstream", "tls --terminate-at upstream",
       "snigate: --terminate-at" + std::string(kNotOverSsh)},
      {"crt", "tls --crt cert.pem", "snigate: --crt" + std::string(kNotOverSsh)},
      {"key", "tls --key=key.pem", "snigate: --key" + std::string(kNotOverSsh)},
      {"upstream proxy protocol", "tls --upstream-proxy-protocol 2",
       "snigate: --upstream-proxy-protocol" + std::string(kNotOverSsh)},
      {"proxy-proto", "tls --proxy-proto", "snigate: --proxy-proto" + std::string(kNotOverSsh)},
      {"traffic-policy-file", "tls --traffic-policy-file p.yml",
       "snigate: --traffic-policy-file" + std::string(kNotOverSsh)},
      {"traffic-policy", "tls --traffic-policy=x",
       "snigate: --traffic-policy" + std::string(kNotOverSsh)},
      {"mutual-tls-cas", "tls --mutual-tls-cas ca.pem",
       "snigate: --mutual-tls-cas" + std::string(kNotOverSsh)},
      {"mtls", "tls --mtls-ca ca.pem", "snigate: --mtls-ca" + std::string(kNotOverSsh)},
      {"refusal after good option", "tls --pool --crt x",
       "snigate: --crt" + std::string(kNotOverSsh)},
      {"implied tls", "--key x", "snigate: --key" + std::string(kNotOverSsh)},
      {"http", "http",
       "snigate: 'http' is not supported: this gateway serves TLS endpoints (run: ssh ... tls)\n"},
      {"tcp with args", "tcp 22",
       "snigate: 'tcp' is not supported: this gateway serves TLS endpoints (run: ssh ... tls)\n"},
      {"shell command", "ls -la",
       "snigate: unknown command 'ls': this gateway serves TLS endpoints (run: ssh ... tls)\n"},
      {"control chars escaped", "rm\x1b[2J",
       "snigate: unknown command 'rm\\x1b[2J': this gateway serves TLS endpoints (run: ssh ... "
       "tls)\n"},
      {"unknown option", "tls --foo", "snigate: unknown option --foo\n" + help},
      {"unknown option with value", "tls --foo=bar", "snigate: unknown option --foo\n" + help},
      {"single dash", "tls -v", "snigate: unknown option -v\n" + help},
      {"stray argument", "tls extra", "snigate: unexpected argument 'extra'\n" + help},
      {"flag with value", "tls --pool=yes", "snigate: --pool takes no value\n"},
      {"cidr missing value", "tls --allow-cidr",
       "snigate: --allow-cidr needs a value, e.g. --allow-cidr 203.0.113.0/24\n"},
      {"unterminated quote", "tls --allow-cidr '10.0.0.0/8",
       "snigate: unterminated quote in the command\n"},
  };
  for (const auto& c : cases) {
    const auto r = parse_command(c.line);
    EXPECT_FALSE(r.command.has_value()) << c.label;
    EXPECT_EQ(r.error, c.error) << c.label;
  }
}

// CIDR validation, for both options, naming the bad value.
TEST(ParseCommand, Cidr) {
  struct Case {
    const char* cidr;
    bool ok;
  };
  const Case cases[] = {
      {"0.0.0.0/0", true},
      {"203.0.113.0/24", true},
      {"192.0.2.1", true},
      {"10.0.0.1/32", true},
      {"::/0", true},
      {"2001:db8::/32", true},
      {"::1", true},
      {"fe80::1/128", true},
      {"::ffff:10.0.0.1/128", true},
      {"10.0.0.0/33", false},
      {"10.0.0.0/", false},
      {"10.0.0.0/08", false},
      {"10.0.0.0/-1", false},
      {"10.0.0/8", false},
      {"256.0.0.0/8", false},
      {"010.0.0.0/8", false},
      {"2001:db8::/129", false},
      {"fe80::1%eth0/64", false},
      {"example.com/24", false},
      {"/24", false},
      {"10.0.0.0/8/8", false},
      {"", false},
      {"1.2.3.4 ", false},
      {"10.0.0.0/1000", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(parse_cidr(c.cidr, nullptr), c.ok) << c.cidr;
    for (const char* opt : {"--allow-cidr", "--deny-cidr"}) {
      const auto r = parse_command(std::string("tls ") + opt + "='" + c.cidr + "'");
      EXPECT_EQ(r.command.has_value(), c.ok) << opt << " " << c.cidr << ": " << r.error;
      if (!c.ok) {
        EXPECT_EQ(r.error, std::string("snigate: ") + opt + ": '" + c.cidr +
                               "' is not a CIDR (e.g. 203.0.113.0/24 or 2001:db8::/32)\n");
      }
    }
  }
}

// The help text names every option.
TEST(ParseCommand, HelpText) {
  const std::string h = tls_help_text();
  for (const char* opt :
       {"--allow-cidr", "--deny-cidr", "--pool", "--takeover", "--verbose", "--help"}) {
    EXPECT_NE(h.find(opt), std::string::npos) << opt;
  }
  EXPECT_EQ(h.back(), '\n');
}

keys::KeyOptions key_with(std::vector<keys::PermitListen> pl) {
  keys::KeyOptions k;
  k.permit_listen = std::move(pl);
  return k;
}

struct ForwardCase {
  const char* label;
  std::string address;
  std::uint32_t port;
  keys::KeyOptions key;
  bool ok;
  std::string hostname;  // "" = generated
  std::uint16_t reply_port;
  std::string refusal_contains;
};

// Forward decisions, including bypass attempts.
TEST(DecideForward, Table) {
  const ForwardPolicy policy{*tunnel::Hostname::parse("tunnel.example.com"), 8443, nullptr, {}};
  const keys::KeyOptions plain;
  const auto alice_app = key_with({{"app.alice.test", 443}});
  const auto alice_wild = key_with({{"*.alice.test", 443}});
  const auto alice_any_port = key_with({{"app.alice.test", std::nullopt}});
  const auto alice_8443 = key_with({{"app.alice.test", 8443}});
  const auto alice_9000 = key_with({{"app.alice.test", 9000}});
  const auto alice_upper = key_with({{"APP.Alice.Test", 443}});
  const auto alice_question = key_with({{"?.alice.test", 443}});
  const auto alice_negated = key_with({{"*.alice.test,!admin.alice.test", 443}});
  const auto alice_neg_prod = key_with({{"*.alice.test,!*.prod.alice.test", 443}});
  keys::KeyOptions restricted = alice_wild;
  restricted.port_forwarding = false;
  restricted.restricted = true;

  const ForwardCase cases[] = {
      // Generated names.
      {"no address", "", 443, plain, true, "", 0, ""},
      {"localhost", "localhost", 443, plain, true, "", 0, ""},
      {"LOCALHOST", "LOCALHOST", 443, alice_app, true, "", 0, ""},
      {"star", "*", 443, plain, true, "", 0, ""},
      {"0.0.0.0", "0.0.0.0", 443, plain, true, "", 0, ""},
      {"::", "::", 443, plain, true, "", 0, ""},
      {"127.0.0.1", "127.0.0.1", 443, plain, true, "", 0, ""},
      {"port 0 reports the advertise port", "", 0, plain, true, "", 8443, ""},
      {"advertise port", "localhost", 8443, plain, true, "", 0, ""},
      // Keys without permitlisten: names under --domain only.
      {"under domain", "myapp.tunnel.example.com", 443, plain, true, "myapp.tunnel.example.com", 0,
       ""},
      {"under domain, port 0", "myapp.tunnel.example.com", 0, plain, true,
       "myapp.tunnel.example.com", 8443, ""},
      {"deep wildcard under domain", "*.x.tunnel.example.com", 443, plain, true,
       "*.x.tunnel.example.com", 0, ""},
      {"outside domain", "app.alice.test", 443, plain, false, "", 0,
       "only names under tunnel.example.com"},
      {"the domain itself", "tunnel.example.com", 443, plain, false, "", 0, "only names under"},
      {"wildcard over all generated names", "*.tunnel.example.com", 443, plain, false, "", 0,
       "only names under"},
      {"suffix trick", "eviltunnel.example.com", 443, plain, false, "", 0, "only names under"},
      // Keys with permitlisten.
      {"exact allowed", "app.alice.test", 443, alice_app, true, "app.alice.test", 0, ""},
      {"case and trailing dot normalise", "APP.ALICE.TEST.", 443, alice_app, true, "app.alice.test",
       0, ""},
      {"pattern case-insensitive", "app.alice.test", 443, alice_upper, true, "app.alice.test", 0,
       ""},
      {"port 0 with :443 entry", "app.alice.test", 0, alice_app, true, "app.alice.test", 8443, ""},
      {"advertise port with :443 entry", "app.alice.test", 8443, alice_app, true, "app.alice.test",
       0, ""},
      {"443 with :8443 entry", "app.alice.test", 443, alice_8443, true, "app.alice.test", 0, ""},
      {"any-port entry", "app.alice.test", 443, alice_any_port, true, "app.alice.test", 0, ""},
      {"entry for another port", "app.alice.test", 443, alice_9000, false, "", 0,
       "permitlisten allows only app.alice.test:9000"},
      {"port 444 refused", "app.alice.test", 444, alice_app, false, "", 0,
       "port 444: use 443 (or 0)"},
      {"port 22 refused for generated", "", 22, plain, false, "", 0, "port 22: use 443 (or 0)"},
      {"huge port", "app.alice.test", 70000, alice_app, false, "", 0, "port 70000: use 443 (or 0)"},
      {"other name refused", "www.alice.test", 443, alice_app, false, "", 0,
       "permitlisten allows only app.alice.test:443"},
      {"permitlisten key outside list but under domain", "x.tunnel.example.com", 443, alice_app,
       false, "", 0, "permitlisten"},
      {"wildcard claimed with exact entry", "*.alice.test", 443, alice_app, false, "", 0,
       "permitlisten allows only"},
      {"wildcard claimed with ? entry", "*.alice.test", 443, alice_question, false, "", 0,
       "permitlisten"},
      {"wildcard entry allows wildcard", "*.alice.test", 443, alice_wild, true, "*.alice.test", 0,
       ""},
      {"wildcard entry allows name", "x.alice.test", 443, alice_wild, true, "x.alice.test", 0, ""},
      {"wildcard entry allows deeper wildcard", "*.x.alice.test", 443, alice_wild, true,
       "*.x.alice.test", 0, ""},
      {"wildcard entry, parent refused", "alice.test", 443, alice_wild, false, "", 0,
       "permitlisten"},
      {"wildcard entry, sibling refused", "x.bob.test", 443, alice_wild, false, "", 0,
       "permitlisten"},
      {"negated name refused", "admin.alice.test", 443, alice_negated, false, "", 0,
       "permitlisten"},
      {"negated: other name ok", "www.alice.test", 443, alice_negated, true, "www.alice.test", 0,
       ""},
      {"negated: wildcard covering it refused", "*.alice.test", 443, alice_negated, false, "", 0,
       "permitlisten"},
      {"negated: disjoint wildcard ok", "*.dev.alice.test", 443, alice_neg_prod, true,
       "*.dev.alice.test", 0, ""},
      {"negated: overlapping wildcard refused", "*.prod.alice.test", 443, alice_neg_prod, false, "",
       0, "permitlisten"},
      // Bad names and bad keys.
      {"IP literal", "10.1.2.3", 443, alice_wild, false, "", 0,
       "IP addresses are not hostnames: use a DNS name"},
      {"IPv6 literal", "2001:db8::1", 443, plain, false, "", 0, "IP addresses are not hostnames"},
      {"bad character", "app_1.alice.test", 443, alice_wild, false, "", 0,
       "may contain only letters"},
      {"empty label", "app..alice.test", 443, alice_wild, false, "", 0,
       "hostname has an empty label"},
      {"misplaced wildcard", "app.*.alice.test", 443, alice_wild, false, "", 0,
       "wildcard must be the whole leftmost label"},
      {"restricted key", "app.alice.test", 443, restricted, false, "", 0,
       "this key may not open tunnels"},
      {"restricted key, generated", "", 443, restricted, false, "", 0,
       "this key may not open tunnels"},
  };
  for (const auto& c : cases) {
    const auto d = decide_forward({c.address, c.port}, c.key, policy);
    EXPECT_EQ(d.ok, c.ok) << c.label << ": " << d.refusal;
    if (c.ok) {
      EXPECT_TRUE(d.refusal.empty()) << c.label;
      EXPECT_EQ(d.reply_port, c.reply_port) << c.label;
      if (c.hostname.empty()) {
        EXPECT_FALSE(d.hostname.has_value()) << c.label;
      } else {
        ASSERT_TRUE(d.hostname.has_value()) << c.label;
        EXPECT_EQ(d.hostname->str(), c.hostname) << c.label;
      }
    } else {
      EXPECT_FALSE(d.hostname.has_value()) << c.label;
      EXPECT_NE(d.refusal.find(c.refusal_contains), std::string::npos)
          << c.label << ": " << d.refusal;
    }
  }
}

// A refusal for a name outside --domain tells the user what to ask for.
TEST(DecideForward, RefusalSaysWhatToDo) {
  const ForwardPolicy policy{*tunnel::Hostname::parse("tunnel.example.com"), 443, nullptr, {}};
  const auto d = decide_forward({"app.alice.test", 443}, keys::KeyOptions{}, policy);
  EXPECT_EQ(d.refusal,
            "cannot use app.alice.test: this key may use only names under tunnel.example.com and "
            ".internal (or no name, for a generated one); ask the admin for "
            "permitlisten=\"app.alice.test:443\" on its authorized_keys line");
}

// Generated labels are 6-8 chars, valid hostname labels, start with a letter, and vary.
TEST(GenerateLabel, Shape) {
  const auto domain = *tunnel::Hostname::parse("tunnel.example.com");
  std::set<std::string> seen;
  std::set<std::size_t> lengths;
  for (std::uint64_t i = 0; i < 2000; ++i) {
    const std::string l = generate_label(i);
    ASSERT_GE(l.size(), 6u);
    ASSERT_LE(l.size(), 8u);
    ASSERT_TRUE(l[0] >= 'a' && l[0] <= 'z') << l;
    ASSERT_EQ(l.find_first_not_of("abcdefghijkmnpqrstuvwxyz23456789"), std::string::npos) << l;
    auto h = tunnel::Hostname::parse(l + "." + domain.str(), false);
    ASSERT_TRUE(h.has_value()) << l;
    EXPECT_TRUE(h->is_under(domain));
    seen.insert(l);
    lengths.insert(l.size());
  }
  EXPECT_EQ(seen.size(), 2000u);
  EXPECT_EQ(lengths.size(), 3u);
  EXPECT_EQ(generate_label(42), generate_label(42));
}

// A name another key's permitlisten names is not available through the --domain default, for
// exact names and for wildcards that cover any of it; a bare `*` reserves nothing; the key's
// own permitlisten doesn't count against itself; keys with permitlisten are unaffected.
TEST(DecideForward, NamesGivenToAnotherKeyAreNotUnderTheDomainDefault) {
  std::vector<std::string> warnings;
  const auto store = keys::KeyStore::from_text(
      "permitlisten=\"*.alice.tunnel.example.com:443\" ssh-ed25519 "
      "AAAAC3NzaC1lZDI1NTE5AAAAIG6psrgvtU79H73Ql20OThmn+VQE8JHOR96ilb84lgZQ alice\n"
      "permitlisten=\"*:443\" ssh-ed25519 "
      "AAAAC3NzaC1lZDI1NTE5AAAAIB8BjtNsTAhCjuypmN8SEzTDKDOb9jWfNSvtNyqAwMiM root\n",
      "keys", &warnings);
  ASSERT_TRUE(warnings.empty()) << warnings.front();
  const ForwardPolicy bob{*tunnel::Hostname::parse("tunnel.example.com"), 443, store.get(),
                          "SHA256:bob"};
  const keys::KeyOptions domain_default;
  for (const char* name : {"app.alice.tunnel.example.com", "*.deep.alice.tunnel.example.com",
                           "*.alice.tunnel.example.com"}) {
    const auto d = decide_forward(ForwardRequest{name, 443}, domain_default, bob);
    EXPECT_FALSE(d.ok) << name;
    EXPECT_NE(d.refusal.find("to another key (permitlisten)"), std::string::npos) << d.refusal;
  }
  EXPECT_TRUE(
      decide_forward(ForwardRequest{"app.bob.tunnel.example.com", 443}, domain_default, bob).ok);
  const ForwardPolicy alice{bob.domain, 443, store.get(), store->keys()[0].fingerprint};
  EXPECT_TRUE(decide_forward(ForwardRequest{"app.alice.tunnel.example.com", 443},
                             store->keys()[0].options, alice)
                  .ok);
}

// ---- decide_direct_open: ssh -L / -W to internal endpoints --------------------------------

DirectTarget internal_of(std::vector<std::string> fps) { return DirectTarget{true, true, fps}; }

keys::KeyOptions permit_open(std::vector<std::string> entries) {
  keys::KeyOptions o;
  for (auto& e : entries) {
    const auto colon = e.rfind(':');
    keys::PermitListen p{e.substr(0, colon), {}};
    if (e.substr(colon + 1) != "*") {
      p.port = static_cast<std::uint16_t>(std::stoi(e.substr(colon + 1)));
    }
    o.permit_open.push_back(p);
  }
  return o;
}

// Proves: each refusal of a direct-tcpip open has its own reason, code and a message saying
// what to do, in the documented order; the allowed cases return the normalised name.
TEST(DecideDirectOpen, Table) {
  using Code = DirectDecision::Code;
  keys::KeyOptions restricted;
  restricted.port_forwarding = false;
  restricted.permit_open = permit_open({"app.internal:443"}).permit_open;
  struct Case {
    const char* label;
    DirectRequest request;
    keys::KeyOptions key;
    DirectTarget target;
    const char* reason;  // "" = allowed
    Code code;
    const char* says;  // a piece of the refusal
  };
  const DirectTarget mine = internal_of({"fpMe"});
  const DirectTarget theirs = internal_of({"fpOther"});
  const DirectTarget mixed = internal_of({"fpMe", "fpOther"});
  const DirectTarget pub{true, false, {"fpOther"}};
  const DirectTarget none{};
  const std::vector<Case> cases = {
      {"own internal, no permitopen", {"APP.internal", 443}, {}, mine, "", Code::none, ""},
      {"advertised port", {"app.internal", 8443}, {}, mine, "", Code::none, ""},
      {"restrict forbids, permitopen or not",
       {"app.internal", 443},
       restricted,
       mine,
       "restricted",
       Code::administratively_prohibited,
       "restrict or no-port-forwarding"},
      {"other port", {"app.internal", 80}, {}, mine, "bad_port", Code::connect_failed, "port 443"},
      {"not a hostname", {"10.0.0.1", 443}, {}, mine, "bad_name", Code::connect_failed, "10.0.0.1"},
      {"wildcard name", {"*.internal", 443}, {}, mine, "bad_name", Code::connect_failed, ""},
      {"another key's, no permitopen",
       {"app.internal", 443},
       {},
       theirs,
       "other_key",
       Code::administratively_prohibited,
       "permitopen=\"app.internal:443\""},
      {"a pool with another key's member",
       {"app.internal", 443},
       {},
       mixed,
       "other_key",
       Code::administratively_prohibited,
       "another key's"},
      {"permitopen allows another key's",
       {"app.internal", 443},
       permit_open({"app.internal:443"}),
       theirs,
       "",
       Code::none,
       ""},
      {"permitopen pattern and any port",
       {"db.team.internal", 443},
       permit_open({"*.team.internal:*"}),
       theirs,
       "",
       Code::none,
       ""},
      {"permitopen negation wins",
       {"db.team.internal", 443},
       permit_open({"*.team.internal,!db.team.internal:443"}),
       theirs,
       "not_permitted",
       Code::administratively_prohibited,
       "permitopen allows only"},
      {"permitopen does not list it, even if it is the key's own",
       {"app.internal", 443},
       permit_open({"other.internal:443"}),
       mine,
       "not_permitted",
       Code::administratively_prohibited,
       "other.internal:443"},
      {"permitopen for another port",
       {"app.internal", 443},
       permit_open({"app.internal:22"}),
       theirs,
       "not_permitted",
       Code::administratively_prohibited,
       ""},
      {"nothing serves it",
       {"gone.internal", 443},
       {},
       none,
       "no_endpoint",
       Code::connect_failed,
       "no internal endpoint serves gone.internal"},
      {"a public endpoint",
       {"app.alice.test", 443},
       {},
       pub,
       "public_only",
       Code::connect_failed,
       "TLS port"},
      {"a public endpoint, permitted",
       {"app.alice.test", 443},
       permit_open({"app.alice.test:443"}),
       pub,
       "public_only",
       Code::connect_failed,
       "public"},
  };
  for (const auto& c : cases) {
    bool looked_up = false;
    const DirectDecision d =
        decide_direct_open(c.request, c.key, "fpMe", 8443, [&](const tunnel::Hostname& name) {
          looked_up = true;
          EXPECT_FALSE(name.is_wildcard()) << c.label;
          return c.target;
        });
    EXPECT_EQ(std::string(d.reason), c.reason) << c.label << ": " << d.refusal;
    EXPECT_EQ(d.code, c.code) << c.label;
    EXPECT_EQ(d.ok, std::string(c.reason).empty()) << c.label;
    if (d.ok) {
      EXPECT_EQ(d.name->str(), gw::ascii::lower(c.request.host)) << c.label;
      EXPECT_TRUE(d.refusal.empty()) << c.label;
    } else {
      EXPECT_NE(d.refusal.find(c.says), std::string::npos) << c.label << ": " << d.refusal;
    }
    if (std::string(c.reason) == "not_permitted" || std::string(c.reason) == "restricted") {
      EXPECT_FALSE(looked_up) << c.label << ": a key learns nothing of names it may not reach";
    }
  }
}

// Proves: names under .internal are internal endpoints, and a key without permitlisten may
// bind them (like names under --domain), but not the bare `*.internal` wildcard.
TEST(DecideForward, InternalNames) {
  EXPECT_TRUE(is_internal_name("app.internal"));
  EXPECT_TRUE(is_internal_name("*.team.internal"));
  EXPECT_FALSE(is_internal_name("internal"));
  EXPECT_FALSE(is_internal_name("app.internal.example.com"));
  EXPECT_FALSE(is_internal_name("appinternal"));
  const ForwardPolicy policy{*tunnel::Hostname::parse("tunnel.example.com"), 443, nullptr, {}};
  EXPECT_TRUE(decide_forward({"app.internal", 443}, keys::KeyOptions{}, policy).ok);
  EXPECT_TRUE(decide_forward({"*.team.internal", 443}, keys::KeyOptions{}, policy).ok);
  EXPECT_FALSE(decide_forward({"*.internal", 443}, keys::KeyOptions{}, policy).ok);
  keys::KeyOptions listed;
  listed.permit_listen.push_back({"*.alice.test", 443});
  EXPECT_FALSE(decide_forward({"app.internal", 443}, listed, policy).ok)
      << "permitlisten restricts internal names too";
}

// Proves: `tls --internal` is an option of its own, and --help lists it.
TEST(ParseCommand, Internal) {
  const auto r = parse_command("tls --internal --pool");
  ASSERT_TRUE(r.command) << r.error;
  EXPECT_TRUE(r.command->internal);
  EXPECT_TRUE(r.command->pool);
  EXPECT_FALSE(parse_command("tls").command->internal);
  EXPECT_NE(tls_help_text().find("--internal"), std::string::npos);
  EXPECT_FALSE(parse_command("tls --internal=yes").command);
}

}  // namespace
}  // namespace gw::sshd

// Tests for the snigate command line: defaults, every option in both spellings, and a table
// of bad argv each with the exact one-line error. Deliberately no process spawning: main()
// only prints parse_args()'s error and exits 2.
#include "app/cli.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "app/config.hpp"

namespace gw::app {
namespace {

using Args = std::vector<std::string>;

ParseResult parse(Args tail) {
  tail.insert(tail.begin(), "snigate");
  return parse_args(tail);
}

// Proves the defaults of DESIGN section 2, including the derived authorized_keys path.
TEST(Cli, ServeDefaults) {
  const auto r = parse({"serve"});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.command, Command::serve);
  const ServeConfig& c = r.config;
  EXPECT_EQ(c.ssh_listen, (std::vector<ListenAddr>{{"0.0.0.0", 2222}}));
  EXPECT_EQ(c.tls_listen, (std::vector<ListenAddr>{{"0.0.0.0", 8443}}));
  EXPECT_EQ(c.admin_listen, (ListenAddr{"127.0.0.1", 9090}));
  EXPECT_EQ(c.state_dir, "./snigate-data");
  EXPECT_EQ(c.authorized_keys, "./snigate-data/authorized_keys");
  EXPECT_EQ(c.domain, "localhost");
  EXPECT_EQ(c.event_log, "");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.advertise_port, std::nullopt);
  EXPECT_EQ(c.idle_timeout, std::chrono::seconds(300));
  EXPECT_EQ(c.client_hello_timeout, std::chrono::seconds(3));
  EXPECT_EQ(c.login_grace, std::chrono::seconds(60));
  EXPECT_EQ(c.threads, 0u);
  EXPECT_EQ(c.drain_timeout, std::chrono::seconds(30));
  EXPECT_FALSE(r.print_config);
}

// Proves every option in `--opt value` form lands in its field.
TEST(Cli, ServeAllOptionsSeparateValue) {
  const auto r = parse({"serve",
                        "--ssh-listen",
                        "127.0.0.1:0",
                        "--tls-listen",
                        "[::]:443",
                        "--admin-listen",
                        "off",
                        "--state-dir",
                        "/var/lib/snigate",
                        "--domain",
                        "Tunnel.Example.COM.",
                        "--advertise-port",
                        "443",
                        "--event-log",
                        "-",
                        "--log-level",
                        "debug",
                        "--idle-timeout",
                        "60",
                        "--client-hello-timeout",
                        "5",
                        "--login-grace",
                        "20",
                        "--threads",
                        "4"});
  ASSERT_EQ(r.error, "");
  const ServeConfig& c = r.config;
  EXPECT_EQ(c.ssh_listen, (std::vector<ListenAddr>{{"127.0.0.1", 0}}));
  EXPECT_EQ(c.tls_listen, (std::vector<ListenAddr>{{"::", 443}}));
  EXPECT_EQ(c.admin_listen, std::nullopt);
  EXPECT_EQ(c.state_dir, "/var/lib/snigate");
  EXPECT_EQ(c.authorized_keys, "/var/lib/snigate/authorized_keys");
  EXPECT_EQ(c.domain, "tunnel.example.com");
  EXPECT_EQ(c.advertise_port, 443);
  EXPECT_EQ(c.event_log, "-");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.idle_timeout, std::chrono::seconds(60));
  EXPECT_EQ(c.client_hello_timeout, std::chrono::seconds(5));
  EXPECT_EQ(c.login_grace, std::chrono::seconds(20));
  EXPECT_EQ(c.threads, 4u);
}

// Proves every limit flag sets its own field and no other (defaults elsewhere).
TEST(Cli, EachLimitFlagSetsItsField) {
  const ServeConfig defaults = parse_args({"snigate", "serve"}).config;
  for (const SettingSpec& l : settings()) {
    if (!l.limit) {
      continue;
    }
    std::string flag = "--" + std::string(l.key);
    std::replace(flag.begin(), flag.end(), '_', '-');
    const auto r = parse_args({"snigate", "serve", flag, "7"});
    ASSERT_EQ(r.error, "") << flag;
    for (const SettingSpec& other : settings()) {
      EXPECT_EQ(other.show(r.config),
                other.key == l.key ? std::vector<std::string>{"7"} : other.show(defaults))
          << flag << " -> " << other.key;
    }
  }
}

// Proves `--opt=value`, repeatable listeners replacing the default, and last-wins.
TEST(Cli, ServeEqualsFormAndRepeats) {
  const auto r = parse({"serve", "--tls-listen=0.0.0.0:443", "--tls-listen=[::1]:8443",
                        "--ssh-listen=localhost:2022", "--authorized-keys=/etc/snigate/keys.d",
                        "--admin-listen=[fe80::1%eth0]:9090", "--log-level=warn",
                        "--log-level=error", "--state-dir=data/"});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.config.tls_listen, (std::vector<ListenAddr>{{"0.0.0.0", 443}, {"::1", 8443}}));
  EXPECT_EQ(r.config.ssh_listen, (std::vector<ListenAddr>{{"localhost", 2022}}));
  EXPECT_EQ(r.config.admin_listen, (ListenAddr{"fe80::1%eth0", 9090}));
  EXPECT_EQ(r.config.authorized_keys, "/etc/snigate/keys.d");
  EXPECT_EQ(r.config.log_level, "error");
  EXPECT_EQ(r.config.state_dir, "data/");
}

// Proves the top-level commands.
TEST(Cli, Commands) {
  EXPECT_EQ(parse({"--help"}).command, Command::help);
  EXPECT_EQ(parse({"-h"}).command, Command::help);
  EXPECT_EQ(parse({"--version"}).command, Command::version);
  EXPECT_EQ(parse({"serve", "--domain", "x.test", "--help"}).command, Command::help);
  const auto hostkey = parse({"hostkey", "--state-dir", "/srv/gw"});
  ASSERT_EQ(hostkey.error, "");
  EXPECT_EQ(hostkey.command, Command::hostkey);
  EXPECT_EQ(hostkey.config.state_dir, "/srv/gw");
  EXPECT_EQ(parse({"hostkey"}).config.state_dir, "./snigate-data");
  const char* argv[] = {"snigate", "serve", "--threads=2"};
  const auto from_argv = parse_args(3, argv);
  ASSERT_EQ(from_argv.error, "");
  EXPECT_EQ(from_argv.config.threads, 2u);
}

struct BadArgv {
  const char* name;
  Args args;
  std::string error;
};

// Proves each bad argv gets exactly one line naming the option and the problem.
TEST(Cli, BadArgvTable) {
  const std::vector<BadArgv> cases = {
      {"no command", {}, "snigate: no command given (see snigate --help)"},
      {"unknown command", {"run"}, "snigate: unknown command \"run\" (see snigate --help)"},
      {"unknown top option", {"--foo"}, "snigate: unknown option --foo (see snigate --help)"},
      {"unknown serve option",
       {"serve", "--foo"},
       "snigate: unknown option --foo (see snigate --help)"},
      {"unknown option with value",
       {"serve", "--foo=1"},
       "snigate: unknown option --foo (see snigate --help)"},
      {"serve option on hostkey",
       {"hostkey", "--domain", "x.test"},
       "snigate: unknown option --domain (see snigate --help)"},
      {"positional",
       {"serve", "extra"},
       "snigate: serve: unexpected argument \"extra\" (see snigate --help)"},
      {"keys verb is not a settings flag",
       {"keys", "list"},
       "snigate: keys: unexpected argument \"list\" (see snigate --help)"},
      {"serve option on keys",
       {"keys", "--domain", "x.test"},
       "snigate: unknown option --domain (see snigate --help)"},
      {"config without a file reader",
       {"serve", "--config", "gw.toml"},
       "snigate: --config gw.toml: cannot read: cannot read files here"},
      {"config empty", {"serve", "--config="}, "snigate: --config: must not be empty"},
      {"config on hostkey needs a value",
       {"hostkey", "--config"},
       "snigate: --config: missing value"},
      {"print-config with a value",
       {"serve", "--print-config=yes"},
       "snigate: --print-config: takes no value"},
      {"print-config on hostkey",
       {"hostkey", "--print-config"},
       "snigate: unknown option --print-config (see snigate --help)"},
      {"drain negative",
       {"serve", "--drain-timeout", "-1"},
       "snigate: --drain-timeout: expected whole seconds from 0 to 604800, got \"-1\""},
      {"missing value at end", {"serve", "--tls-listen"}, "snigate: --tls-listen: missing value"},
      {"missing value before option",
       {"serve", "--state-dir", "--domain", "x.test"},
       "snigate: --state-dir: missing value"},
      {"port with junk",
       {"serve", "--tls-listen", "8443x"},
       "snigate: --tls-listen: expected HOST:PORT, got \"8443x\""},
      {"port only",
       {"serve", "--tls-listen=8443"},
       "snigate: --tls-listen: expected HOST:PORT, got \"8443\""},
      {"empty host",
       {"serve", "--ssh-listen", ":2222"},
       "snigate: --ssh-listen: expected HOST:PORT, got \":2222\""},
      {"port too big",
       {"serve", "--ssh-listen", "0.0.0.0:65536"},
       "snigate: --ssh-listen: port must be a number from 0 to 65535, got \"0.0.0.0:65536\""},
      {"negative port",
       {"serve", "--ssh-listen", "0.0.0.0:-1"},
       "snigate: --ssh-listen: port must be a number from 0 to 65535, got \"0.0.0.0:-1\""},
      {"empty port",
       {"serve", "--ssh-listen", "0.0.0.0:"},
       "snigate: --ssh-listen: port must be a number from 0 to 65535, got \"0.0.0.0:\""},
      {"ipv6 without brackets",
       {"serve", "--ssh-listen", "::1:2222"},
       "snigate: --ssh-listen: IPv6 addresses need brackets, as [::]:PORT; got \"::1:2222\""},
      {"bracket without port",
       {"serve", "--tls-listen", "[::1]"},
       "snigate: --tls-listen: expected [IPV6]:PORT, got \"[::1]\""},
      {"bracketed name",
       {"serve", "--tls-listen", "[localhost]:80"},
       "snigate: --tls-listen: expected an IPv6 address inside [ ], got \"[localhost]:80\""},
      {"bad host char",
       {"serve", "--tls-listen", "a_b:80"},
       "snigate: --tls-listen: expected HOST:PORT, got \"a_b:80\""},
      {"admin junk",
       {"serve", "--admin-listen", "none"},
       "snigate: --admin-listen: expected HOST:PORT, got \"none\" (or \"off\")"},
      {"empty state dir", {"serve", "--state-dir="}, "snigate: --state-dir: must not be empty"},
      {"domain underscore",
       {"serve", "--domain", "my_domain.com"},
       "snigate: --domain: expected a DNS name (letters, digits, hyphens and dots), got "
       "\"my_domain.com\""},
      {"domain empty label",
       {"serve", "--domain", "a..b"},
       "snigate: --domain: empty label in \"a..b\""},
      {"domain hyphen",
       {"serve", "--domain", "-a.b"},
       "snigate: --domain: a label may not start or end with a hyphen in \"-a.b\""},
      {"domain ip",
       {"serve", "--domain", "10.0.0.1"},
       "snigate: --domain: expected a DNS name, got the IP address \"10.0.0.1\""},
      {"domain numeric tld",
       {"serve", "--domain", "a.b.123"},
       "snigate: --domain: the last label may not be all digits in \"a.b.123\""},
      {"domain too long",
       {"serve", "--domain", std::string(254, 'a')},
       "snigate: --domain: longer than 253 characters"},
      {"domain long label",
       {"serve", "--domain", std::string(64, 'a') + ".test"},
       "snigate: --domain: label longer than 63 characters in \"" + std::string(64, 'a') +
           ".test\""},
      {"domain empty", {"serve", "--domain="}, "snigate: --domain: must not be empty"},
      {"advertise 0",
       {"serve", "--advertise-port", "0"},
       "snigate: --advertise-port: expected a port from 1 to 65535, got \"0\""},
      {"advertise junk",
       {"serve", "--advertise-port", "https"},
       "snigate: --advertise-port: expected a port from 1 to 65535, got \"https\""},
      {"log level",
       {"serve", "--log-level", "verbose"},
       "snigate: --log-level: expected trace, debug, info, warn or error, got \"verbose\""},
      {"idle zero",
       {"serve", "--idle-timeout", "0"},
       "snigate: --idle-timeout: expected whole seconds from 1 to 604800, got \"0\""},
      {"idle with unit",
       {"serve", "--idle-timeout", "5m"},
       "snigate: --idle-timeout: expected whole seconds from 1 to 604800, got \"5m\""},
      {"hello timeout too long",
       {"serve", "--client-hello-timeout", "61"},
       "snigate: --client-hello-timeout: expected whole seconds from 1 to 60, got \"61\""},
      {"limit zero",
       {"serve", "--max-unauthenticated-per-ip", "0"},
       "snigate: --max-unauthenticated-per-ip: expected a number from 1 to 100000, got \"0\""},
      {"limit not a number",
       {"serve", "--max-connections-per-endpoint=lots"},
       "snigate: --max-connections-per-endpoint: expected a number from 1 to 1000000, got "
       "\"lots\""},
      {"login grace too long",
       {"serve", "--login-grace", "601"},
       "snigate: --login-grace: expected whole seconds from 1 to 600, got \"601\""},
      {"threads",
       {"serve", "--threads", "many"},
       "snigate: --threads: expected a number from 0 (one per core) to 1024, got \"many\""},
      {"control bytes escaped",
       {"serve", "--log-level", "a\nb"},
       "snigate: --log-level: expected trace, debug, info, warn or error, got \"a\\x0ab\""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto r = parse(c.args);
    EXPECT_EQ(r.error, c.error);
    EXPECT_EQ(r.error.find('\n'), std::string::npos);
  }
}

// Proves HOST:PORT parsing on its own, including the port-0 and IPv6 forms.
TEST(Cli, ListenAddr) {
  EXPECT_EQ(parse_listen_addr("0.0.0.0:0"), (ListenAddr{"0.0.0.0", 0}));
  EXPECT_EQ(parse_listen_addr("[::]:2222"), (ListenAddr{"::", 2222}));
  EXPECT_EQ(parse_listen_addr("gw.example.com:65535"), (ListenAddr{"gw.example.com", 65535}));
  EXPECT_EQ(parse_listen_addr("[::ffff:127.0.0.1]:1"), (ListenAddr{"::ffff:127.0.0.1", 1}));
  for (const char* bad : {"", ":", "host", "host:", "host:+1", "host:1 ", "[::1]2", "[]:1",
                          "[::1%]:1", "[::1]:", "host:99999999999999999999"}) {
    EXPECT_EQ(parse_listen_addr(bad), std::nullopt) << bad;
  }
}

// Proves the usage text documents every serve option.
TEST(Cli, UsageMentionsEveryOption) {
  const std::string usage = usage_text();
  for (const char* opt :
       {"--ssh-listen", "--tls-listen", "--admin-listen", "--state-dir", "--authorized-keys",
        "--domain", "--advertise-port", "--event-log", "--log-level", "--idle-timeout",
        "--client-hello-timeout", "--login-grace", "--threads", "--drain-timeout", "--config",
        "--print-config", "SNIGATE_", "hostkey", "--version"}) {
    EXPECT_NE(usage.find(opt), std::string::npos) << opt;
  }
  for (const SettingSpec& l : settings()) {
    if (!l.limit) {
      continue;
    }
    std::string flag = "--" + std::string(l.key);
    std::replace(flag.begin(), flag.end(), '_', '-');
    EXPECT_NE(usage.find(flag + " N"), std::string::npos) << flag;
  }
  EXPECT_EQ(usage.back(), '\n');
}

}  // namespace
}  // namespace gw::app

// Tests for the configuration layers under the flags: the TOML file (--config / SNIGATE_CONFIG),
// SNIGATE_* variables, their precedence (flag > environment > file > default), the one-line
// refusals naming file:line and key, and --print-config's TOML reading back to the same
// configuration. Deliberately no real files or environment: both are passed in.
#include "app/config.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "app/cli.hpp"

namespace gw::app {
namespace {

using Args = std::vector<std::string>;
using Files = std::map<std::string, std::string>;

FileReader reader(Files files) {
  return [files = std::move(files)](const std::string& path,
                                    std::string& error) -> std::optional<std::string> {
    const auto it = files.find(path);
    if (it == files.end()) {
      error = "No such file or directory";
      return std::nullopt;
    }
    return it->second;
  };
}

ParseResult parse(Args tail, const Environment& env = {}, const Files& files = {}) {
  tail.insert(tail.begin(), "snigate");
  return parse_args(tail, env, reader(files));
}

const char* const kFullFile = R"(# every key
ssh_listen = ["127.0.0.1:2022", "[::1]:2022"]
tls_listen = "0.0.0.0:443"
admin_listen = "off"
state_dir = "/var/lib/snigate"
authorized_keys = "/etc/snigate/keys.d"
domain = "Tunnel.Example.COM."
advertise_port = 443
event_log = "/var/log/snigate/events.jsonl"
log_level = "debug"
idle_timeout = 60
client_hello_timeout = 5
login_grace = 30
threads = 4
max_connections_per_endpoint = 500
max_sessions_per_key = 5
admin_token_file = "/etc/snigate/token"
drain_timeout = 0
)";

// Proves every key of the file lands in its field, with the flags' normalisation.
TEST(Config, FileSetsEveryKey) {
  const auto r = parse({"serve", "--config", "gw.toml"}, {}, {{"gw.toml", kFullFile}});
  ASSERT_EQ(r.error, "");
  const ServeConfig& c = r.config;
  EXPECT_EQ(c.ssh_listen, (std::vector<ListenAddr>{{"127.0.0.1", 2022}, {"::1", 2022}}));
  EXPECT_EQ(c.tls_listen, (std::vector<ListenAddr>{{"0.0.0.0", 443}}));
  EXPECT_EQ(c.admin_listen, std::nullopt);
  EXPECT_EQ(c.state_dir, "/var/lib/snigate");
  EXPECT_EQ(c.authorized_keys, "/etc/snigate/keys.d");
  EXPECT_EQ(c.domain, "tunnel.example.com");
  EXPECT_EQ(c.advertise_port, 443);
  EXPECT_EQ(c.event_log, "/var/log/snigate/events.jsonl");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.idle_timeout, std::chrono::seconds(60));
  EXPECT_EQ(c.client_hello_timeout, std::chrono::seconds(5));
  EXPECT_EQ(c.login_grace, std::chrono::seconds(30));
  EXPECT_EQ(c.max_connections_per_endpoint, 500u);
  EXPECT_EQ(c.max_sessions_per_key, 5u);
  EXPECT_EQ(c.threads, 4u);
  EXPECT_EQ(c.admin_token_file, "/etc/snigate/token");
  EXPECT_EQ(c.drain_timeout, std::chrono::seconds(0));
  EXPECT_EQ(r.origins.at("domain"), "gw.toml:7");
  EXPECT_EQ(r.origins.at("admin_token"), "default");
}

// Proves an empty file and a file of comments change nothing.
TEST(Config, EmptyFileKeepsDefaults) {
  const auto r = parse({"serve", "--config=e.toml"}, {}, {{"e.toml", "# nothing\n\n"}});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.config.tls_listen, (std::vector<ListenAddr>{{"0.0.0.0", 8443}}));
  EXPECT_EQ(r.config.authorized_keys, "./snigate-data/authorized_keys");
}

// Proves flag > environment > file > default for a scalar, key by key.
TEST(Config, PrecedenceScalar) {
  const Files files = {{"gw.toml", "log_level = \"warn\"\nthreads = 3\ndomain = \"file.test\"\n"}};
  const Environment env = {{"SNIGATE_LOG_LEVEL", "error"}, {"SNIGATE_THREADS", "2"}};
  const auto r = parse({"serve", "--config", "gw.toml", "--log-level", "trace"}, env, files);
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.config.log_level, "trace");                       // flag over env and file
  EXPECT_EQ(r.config.threads, 2u);                              // env over file
  EXPECT_EQ(r.config.domain, "file.test");                      // file over default
  EXPECT_EQ(r.config.idle_timeout, std::chrono::seconds(300));  // default
  EXPECT_EQ(r.origins.at("log_level"), "flag");
  EXPECT_EQ(r.origins.at("threads"), "env SNIGATE_THREADS");
  EXPECT_EQ(r.origins.at("domain"), "gw.toml:3");
  EXPECT_EQ(r.origins.at("idle_timeout"), "default");
}

// Proves a list from a higher layer replaces the lower layer's whole list (no merging), and
// that repeats within the flags still add up.
TEST(Config, PrecedenceLists) {
  const Files files = {{"gw.toml",
                        "tls_listen = [\"1.1.1.1:1\", \"2.2.2.2:2\"]\n"
                        "ssh_listen = [\"3.3.3.3:3\"]\n"}};
  const Environment env = {{"SNIGATE_TLS_LISTEN", " 4.4.4.4:4 , [::]:5"}};
  auto r = parse({"serve", "--config", "gw.toml"}, env, files);
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.config.tls_listen, (std::vector<ListenAddr>{{"4.4.4.4", 4}, {"::", 5}}));
  EXPECT_EQ(r.config.ssh_listen, (std::vector<ListenAddr>{{"3.3.3.3", 3}}));
  r = parse({"serve", "--config", "gw.toml", "--tls-listen", "6.6.6.6:6", "--tls-listen=7.7.7.7:7"},
            env, files);
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.config.tls_listen, (std::vector<ListenAddr>{{"6.6.6.6", 6}, {"7.7.7.7", 7}}));
}

// Proves SNIGATE_CONFIG names the file and --config beats it.
TEST(Config, ConfigPathFromEnvironment) {
  const Files files = {{"env.toml", "threads = 5\n"}, {"flag.toml", "threads = 6\n"}};
  EXPECT_EQ(parse({"serve"}, {{"SNIGATE_CONFIG", "env.toml"}}, files).config.threads, 5u);
  EXPECT_EQ(parse({"serve", "--config", "flag.toml"}, {{"SNIGATE_CONFIG", "env.toml"}}, files)
                .config.threads,
            6u);
  EXPECT_EQ(parse({"serve"}, {{"SNIGATE_CONFIG", "gone.toml"}}, files).error,
            "snigate: SNIGATE_CONFIG gone.toml: cannot read: No such file or directory");
}

// Proves every setting has its variable, empty variables count as unset and unrelated
// SNIGATE_* names (SNIGATE_BIN of the e2e tests) are ignored.
TEST(Config, EnvironmentEveryKey) {
  const Environment env = {{"SNIGATE_SSH_LISTEN", "127.0.0.1:0"},
                           {"SNIGATE_TLS_LISTEN", "127.0.0.1:0,[::1]:0"},
                           {"SNIGATE_ADMIN_LISTEN", "off"},
                           {"SNIGATE_STATE_DIR", "/data"},
                           {"SNIGATE_DOMAIN", "gw.test"},
                           {"SNIGATE_ADVERTISE_PORT", "443"},
                           {"SNIGATE_EVENT_LOG", "-"},
                           {"SNIGATE_LOG_LEVEL", "warn"},
                           {"SNIGATE_IDLE_TIMEOUT", "10"},
                           {"SNIGATE_CLIENT_HELLO_TIMEOUT", "2"},
                           {"SNIGATE_THREADS", "1"},
                           {"SNIGATE_DRAIN_TIMEOUT", "7"},
                           {"SNIGATE_AUTHORIZED_KEYS", ""},
                           {"SNIGATE_BIN", "build/snigate"},
                           {"TLS_LISTEN", "bad"}};
  const auto r = parse({"serve"}, env);
  ASSERT_EQ(r.error, "");
  const ServeConfig& c = r.config;
  EXPECT_EQ(c.ssh_listen, (std::vector<ListenAddr>{{"127.0.0.1", 0}}));
  EXPECT_EQ(c.tls_listen, (std::vector<ListenAddr>{{"127.0.0.1", 0}, {"::1", 0}}));
  EXPECT_EQ(c.admin_listen, std::nullopt);
  EXPECT_EQ(c.state_dir, "/data");
  EXPECT_EQ(c.authorized_keys, "/data/authorized_keys");  // derived from the env's state dir
  EXPECT_EQ(c.domain, "gw.test");
  EXPECT_EQ(c.advertise_port, 443);
  EXPECT_EQ(c.event_log, "-");
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_EQ(c.idle_timeout, std::chrono::seconds(10));
  EXPECT_EQ(c.client_hello_timeout, std::chrono::seconds(2));
  EXPECT_EQ(c.threads, 1u);
  EXPECT_EQ(c.drain_timeout, std::chrono::seconds(7));
  for (const auto key : config_keys()) {
    EXPECT_EQ(env_name(key).rfind("SNIGATE_", 0), 0u);
  }
  EXPECT_EQ(env_name("client_hello_timeout"), "SNIGATE_CLIENT_HELLO_TIMEOUT");
}

// Proves the admin token's two spellings are one setting across layers: a higher layer's
// file beats a lower layer's value and the other way round; within a layer the value wins
// (main's rule).
TEST(Config, AdminTokenAcrossLayers) {
  const Environment env = {{"SNIGATE_ADMIN_TOKEN", "from-env"}};
  auto r = parse({"serve", "--admin-token-file", "/run/token"}, env);
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.config.admin_token, "");
  EXPECT_EQ(r.config.admin_token_file, "/run/token");
  r = parse({"serve", "--config", "gw.toml"}, env, {{"gw.toml", "admin_token_file = \"/t\"\n"}});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.config.admin_token, "from-env");
  EXPECT_EQ(r.config.admin_token_file, "");
  r = parse({"serve", "--admin-token", "a", "--admin-token-file", "/t"});
  EXPECT_EQ(r.config.admin_token, "a");
  EXPECT_EQ(r.config.admin_token_file, "/t");
}

// Proves hostkey reads its state dir from the file and the environment too.
TEST(Config, HostkeyUsesLayers) {
  EXPECT_EQ(parse({"hostkey"}, {{"SNIGATE_STATE_DIR", "/data"}}).config.state_dir, "/data");
  EXPECT_EQ(parse({"hostkey", "--config", "gw.toml"}, {}, {{"gw.toml", "state_dir = \"/srv\"\n"}})
                .config.state_dir,
            "/srv");
  EXPECT_EQ(
      parse({"hostkey", "--state-dir", "/x"}, {{"SNIGATE_STATE_DIR", "/data"}}).config.state_dir,
      "/x");
}

struct BadConfig {
  const char* name;
  std::string file;  ///< contents of gw.toml
  Environment env;
  std::string error;
};

// Proves each bad file or variable is refused with one line naming where, the key and why.
TEST(Config, BadConfigTable) {
  const std::vector<BadConfig> cases = {
      {"unknown key",
       "threads = 2\ntls_listn = \"x\"\n",
       {},
       "snigate: gw.toml:2: unknown key \"tls_listn\" (keys are the serve options without "
       "\"--\" and with \"_\", e.g. tls_listen; see snigate --help)"},
      {"flag spelling is not a key",
       "tls-listen = \"0.0.0.0:1\"\n",
       {},
       "snigate: gw.toml:1: unknown key \"tls-listen\" (keys are the serve options without "
       "\"--\" and with \"_\", e.g. tls_listen; see snigate --help)"},
      {"config is not a key",
       "config = \"other.toml\"\n",
       {},
       "snigate: gw.toml:1: unknown key \"config\" (keys are the serve options without \"--\" "
       "and with \"_\", e.g. tls_listen; see snigate --help)"},
      {"table",
       "[server]\nthreads = 2\n",
       {},
       "snigate: gw.toml:1: unknown key \"server\" (keys are the serve options without \"--\" "
       "and with \"_\", e.g. tls_listen; see snigate --help)"},
      {"known key as a table",
       "[domain]\nname = \"x\"\n",
       {},
       "snigate: gw.toml:1: domain: expected a string, got a table"},
      {"syntax",
       "threads = \n",
       {},
       "snigate: gw.toml:1:11: invalid TOML: Error while parsing key-value pair: expected "
       "value, saw '\\\\n'"},
      {"duplicate key",
       "threads = 1\nthreads = 2\n",
       {},
       "snigate: gw.toml:2:11: invalid TOML: Error while parsing key-value pair: cannot "
       "redefine existing integer 'threads'"},
      {"integer as string",
       "idle_timeout = \"300\"\n",
       {},
       "snigate: gw.toml:1: idle_timeout: expected an integer, got a string"},
      {"float",
       "threads = 1.5\n",
       {},
       "snigate: gw.toml:1: threads: expected an integer, got a float"},
      {"string as integer",
       "domain = 5\n",
       {},
       "snigate: gw.toml:1: domain: expected a string, got an integer"},
      {"boolean",
       "admin_listen = false\n",
       {},
       "snigate: gw.toml:1: admin_listen: expected a string, got a boolean"},
      {"list of integers",
       "\n\ntls_listen = [8443]\n",
       {},
       "snigate: gw.toml:3: tls_listen: expected an array of \"HOST:PORT\" strings, got an "
       "integer in it"},
      {"list as integer",
       "ssh_listen = 2222\n",
       {},
       "snigate: gw.toml:1: ssh_listen: expected an array of strings, got an integer"},
      {"empty list",
       "tls_listen = []\n",
       {},
       "snigate: gw.toml:1: tls_listen: expected at least one \"HOST:PORT\""},
      {"bad value in file",
       "# c\nidle_timeout = 0\n",
       {},
       "snigate: gw.toml:2: idle_timeout: expected whole seconds from 1 to 604800, got \"0\""},
      {"negative in file",
       "advertise_port = -443\n",
       {},
       "snigate: gw.toml:1: advertise_port: expected a port from 1 to 65535, got \"-443\""},
      {"bad list item in file",
       "tls_listen = [\"0.0.0.0:443\", \"8443\"]\n",
       {},
       "snigate: gw.toml:1: tls_listen: expected HOST:PORT, got \"8443\""},
      {"empty string in file",
       "state_dir = \"\"\n",
       {},
       "snigate: gw.toml:1: state_dir: must not be empty"},
      {"first bad line in file order",
       "threads = -1\ndomain = \"a..b\"\n",
       {},
       "snigate: gw.toml:1: threads: expected a number from 0 (one per core) to 1024, got "
       "\"-1\""},
      {"bad env value",
       "",
       {{"SNIGATE_IDLE_TIMEOUT", "5m"}},
       "snigate: SNIGATE_IDLE_TIMEOUT: expected whole seconds from 1 to 604800, got \"5m\""},
      {"bad env list item",
       "",
       {{"SNIGATE_SSH_LISTEN", "0.0.0.0:22,localhost"}},
       "snigate: SNIGATE_SSH_LISTEN: expected HOST:PORT, got \"localhost\""},
      {"empty env list item",
       "",
       {{"SNIGATE_TLS_LISTEN", "0.0.0.0:1,,0.0.0.0:2"}},
       "snigate: SNIGATE_TLS_LISTEN: empty item in \"0.0.0.0:1,,0.0.0.0:2\" (expected "
       "HOST:PORT[,HOST:PORT...])"},
      {"env bad even when the flag overrides it",
       "",
       {{"SNIGATE_LOG_LEVEL", "loud"}},
       "snigate: SNIGATE_LOG_LEVEL: expected trace, debug, info, warn or error, got \"loud\""},
      {"control bytes in a key are escaped",
       "\"a\\u0001\" = 1\n",
       {},
       "snigate: gw.toml:1: unknown key \"a\\x01\" (keys are the serve options without \"--\" "
       "and with \"_\", e.g. tls_listen; see snigate --help)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto r = parse({"serve", "--config", "gw.toml", "--log-level", "info"}, c.env,
                         {{"gw.toml", c.file}});
    EXPECT_EQ(r.error, c.error);
    EXPECT_EQ(r.error.find('\n'), std::string::npos);
  }
}

// Proves an unreadable file is refused with the reader's reason.
TEST(Config, UnreadableFile) {
  EXPECT_EQ(parse({"serve", "--config", "missing.toml"}).error,
            "snigate: --config missing.toml: cannot read: No such file or directory");
}

// Proves --print-config is a serve flag and its TOML reads back to the same configuration,
// with origins, the unset settings commented out and the token never shown.
TEST(Config, PrintConfigRoundTrip) {
  const Environment env = {{"SNIGATE_TLS_LISTEN", "127.0.0.1:0,[::1]:8443"},
                           {"SNIGATE_ADMIN_TOKEN", "s3cret"}};
  const auto r = parse({"serve", "--print-config", "--config", "gw.toml", "--state-dir",
                        "/srv/with \"quotes\"\\and\ttab"},
                       env, {{"gw.toml", kFullFile}});
  ASSERT_EQ(r.error, "");
  EXPECT_TRUE(r.print_config);
  const std::string text = to_toml(r.config, &r.origins);
  EXPECT_NE(text.find("tls_listen = [\"127.0.0.1:0\", \"[::1]:8443\"]  # env SNIGATE_TLS_LISTEN\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("domain = \"tunnel.example.com\"  # gw.toml:7\n"), std::string::npos);
  EXPECT_NE(text.find("state_dir = \"/srv/with \\\"quotes\\\"\\\\and\\u0009tab\"  # flag\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("admin_listen = \"off\""), std::string::npos);
  EXPECT_NE(text.find("# admin_token: set, not shown"), std::string::npos);
  EXPECT_EQ(text.find("s3cret"), std::string::npos);

  // Read it back as the only layer: the same configuration (the token aside: not printed).
  const auto back = parse({"serve", "--config", "print.toml"}, {}, {{"print.toml", text}});
  ASSERT_EQ(back.error, "");
  ServeConfig expected = r.config;
  expected.admin_token.clear();
  EXPECT_EQ(to_toml(back.config), to_toml(expected));
  EXPECT_EQ(back.config.tls_listen, r.config.tls_listen);
  EXPECT_EQ(back.config.state_dir, r.config.state_dir);
}

// Proves the defaults print and read back too (optional settings commented out).
TEST(Config, PrintDefaults) {
  const auto r = parse({"serve", "--print-config"});
  ASSERT_EQ(r.error, "");
  const std::string text = to_toml(r.config, &r.origins);
  EXPECT_NE(text.find("ssh_listen = [\"0.0.0.0:2222\"]  # default\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# advertise_port: unset"), std::string::npos);
  EXPECT_NE(text.find("# event_log: unset"), std::string::npos);
  EXPECT_NE(text.find("authorized_keys = \"./snigate-data/authorized_keys\"  # default "
                      "(STATE_DIR/authorized_keys)\n"),
            std::string::npos);
  const auto back = parse({"serve", "--config", "p.toml"}, {}, {{"p.toml", text}});
  ASSERT_EQ(back.error, "");
  EXPECT_EQ(to_toml(back.config), to_toml(r.config));
}

// Proves the key list matches the flags: each key is a serve option and vice versa.
TEST(Config, KeysAreOptions) {
  const std::string usage = usage_text();
  for (const auto key : config_keys()) {
    std::string flag = "--" + std::string(key);
    std::replace(flag.begin(), flag.end(), '_', '-');
    EXPECT_NE(usage.find(flag + " "), std::string::npos) << flag;
    EXPECT_TRUE(is_config_key(key));
  }
  EXPECT_FALSE(is_config_key("config"));
  EXPECT_FALSE(is_config_key("print_config"));
}

// Proves the table is complete: every row can be set by its flag, its variable and its file
// key to the same value, shows that value back, and is in --help with its metavariable.
/// Cluster options are valid only together (cli.cpp check_cluster): the flags that make a row of
/// theirs acceptable alone, without the row itself.
std::vector<std::string> cluster_companions(std::string_view key) {
  const std::vector<std::pair<std::string, std::string>> all = {
      {"cluster_etcd", "http://127.0.0.1:7"},
      {"node_id", "seven"},
      {"relay_listen", "127.0.0.2:7"},
      {"cluster_ca", "/ca"},
      {"cluster_cert", "/cert"},
      {"cluster_key", "/key"}};
  const bool relay = key == "relay_listen" || key == "relay_advertise" ||
                     key.starts_with("cluster_c") || key == "cluster_key";
  const bool cluster =
      relay || key == "node_id" || key == "cluster_etcd" || key == "cluster_lease_ttl";
  std::vector<std::string> out;
  for (const auto& [k, v] : all) {
    if (!cluster || k == key || (!relay && k != "cluster_etcd" && k != "node_id")) {
      continue;
    }
    std::string flag = "--" + k;
    std::replace(flag.begin(), flag.end(), '_', '-');
    out.push_back(flag);
    out.push_back(v);
  }
  return out;
}

TEST(Settings, EveryRowWorksThroughEveryLayer) {
  const std::string usage = usage_text();
  for (const SettingSpec& s : settings()) {
    SCOPED_TRACE(std::string(s.key));
    ASSERT_NE(s.apply, nullptr);
    ASSERT_NE(s.show, nullptr);
    EXPECT_EQ(find_setting(s.key), &s);
    std::string flag = "--" + std::string(s.key);
    std::replace(flag.begin(), flag.end(), '_', '-');
    EXPECT_NE(usage.find("  " + flag + " " + std::string(s.metavar)), std::string::npos);
    // A value each kind accepts (within every row's range): what the flag sets, the others
    // set too.
    const std::string value = s.metavar == "CIDR"            ? "10.0.0.0/8"
                              : s.kind == ValueKind::list    ? "127.0.0.1:7"
                              : s.key == "admin_listen"      ? "127.0.0.2:7"
                              : s.key == "log_level"         ? "warn"
                              : s.key == "domain"            ? "seven.test"
                              : s.key == "cluster_etcd"      ? "http://127.0.0.1:7"
                              : s.key == "node_id"           ? "seven"
                              : s.key.starts_with("relay_")  ? "127.0.0.2:7"
                              : s.kind == ValueKind::integer ? "7"
                              : s.kind == ValueKind::boolean ? "false"  // every default is true
                                                             : "/seven";
    const std::vector<std::string> companions = cluster_companions(s.key);
    const auto with = [&](std::vector<std::string> args) {
      args.insert(args.end(), companions.begin(), companions.end());
      return args;
    };
    // A boolean's flag takes its value only after "=" (`--x` alone is true).
    const auto by_flag = parse(s.kind == ValueKind::boolean ? with({"serve", flag + "=" + value})
                                                            : with({"serve", flag, value}));
    ASSERT_EQ(by_flag.error, "");
    EXPECT_EQ(by_flag.origins.at(std::string(s.key)), "flag");
    const auto by_env = parse(with({"serve"}), {{env_name(s.key), value}});
    ASSERT_EQ(by_env.error, "");
    EXPECT_EQ(by_env.origins.at(std::string(s.key)), "env " + env_name(s.key));
    const std::string toml =
        std::string(s.key) + " = " +
        (s.kind != ValueKind::string && s.kind != ValueKind::list ? value : "\"" + value + "\"") +
        "\n";
    const auto by_file = parse(with({"serve", "--config", "f.toml"}), {}, {{"f.toml", toml}});
    ASSERT_EQ(by_file.error, "");
    EXPECT_EQ(by_file.origins.at(std::string(s.key)), "f.toml:1");
    EXPECT_EQ(s.show(by_flag.config), s.show(by_env.config));
    EXPECT_EQ(s.show(by_flag.config), s.show(by_file.config));
    if (!s.secret) {
      EXPECT_EQ(s.show(by_flag.config), std::vector<std::string>{value});
    }
  }
}

// Proves --trusted-proxy takes CIDRs and bare addresses (stored normalised), is repeatable
// and refuses anything else naming the option.
TEST(Settings, TrustedProxyIsACidrList) {
  const auto r =
      parse({"serve", "--trusted-proxy", "10.1.2.3/8", "--trusted-proxy", "2001:DB8::1"});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.config.trusted_proxy, (std::vector<std::string>{"10.1.2.3/8", "2001:db8::1/128"}));
  EXPECT_EQ(parse({"serve"}, {{"SNIGATE_TRUSTED_PROXY", "10.0.0.1, 10.0.0.2"}})
                .config.trusted_proxy.size(),
            2u);
  EXPECT_EQ(parse({"serve", "--trusted-proxy", "lb.example.com"}).error,
            "snigate: --trusted-proxy: expected an address or CIDR (10.0.0.0/8, 2001:db8::/32), "
            "got \"lb.example.com\"");
  EXPECT_TRUE(parse({"serve"}).config.trusted_proxy.empty());
}

// Proves the flags each subcommand takes come from the table's scopes: hostkey takes only
// --state-dir (and --config), keys --state-dir and --authorized-keys, with serve's defaults
// and derivation (STATE_DIR/authorized_keys).
TEST(Settings, SubcommandScopes) {
  auto keys = parse({"keys", "--state-dir", "/srv/gw"});
  ASSERT_EQ(keys.error, "");
  EXPECT_EQ(keys.command, Command::keys);
  EXPECT_EQ(keys.config.authorized_keys, "/srv/gw/authorized_keys");
  keys = parse({"keys", "--authorized-keys=/etc/keys"}, {{"SNIGATE_STATE_DIR", "/data"}});
  ASSERT_EQ(keys.error, "");
  EXPECT_EQ(keys.config.authorized_keys, "/etc/keys");
  EXPECT_EQ(parse({"keys"}, {{"SNIGATE_STATE_DIR", "/data"}}).config.authorized_keys,
            "/data/authorized_keys");
  EXPECT_EQ(parse({"keys", "--config", "k.toml"}, {}, {{"k.toml", "state_dir = \"/k\"\n"}})
                .config.authorized_keys,
            "/k/authorized_keys");
  EXPECT_EQ(parse({"hostkey", "--authorized-keys", "/x"}).error,
            "snigate: unknown option --authorized-keys (see snigate --help)");
  EXPECT_EQ(parse({"keys", "--tls-listen", "0.0.0.0:1"}).error,
            "snigate: unknown option --tls-listen (see snigate --help)");
  // A cluster node's environment (its --node-id is a flag of serve's) doesn't stop `keys` or
  // `hostkey` run beside it; serve still refuses it.
  const Environment node_env = {{"SNIGATE_CLUSTER_ETCD", "http://127.0.2.1:2379"},
                                {"SNIGATE_CLUSTER_CA", "/cluster/ca.pem"},
                                {"SNIGATE_STATE_DIR", "/data"}};
  EXPECT_EQ(parse({"keys"}, node_env).error, "");
  EXPECT_EQ(parse({"hostkey"}, node_env).error, "");
  EXPECT_NE(parse({"serve"}, node_env).error, "");
}

// Proves --help's option lines come from the table: a default is shown from ServeConfig's
// initialiser, and long lines wrap under the help column.
TEST(Settings, HelpLinesFromTheTable) {
  const std::string help = settings_help(kServe, false);
  EXPECT_NE(help.find("  --idle-timeout SECONDS        close tunnels idle this long in either "
                      "direction (default 300)\n"),
            std::string::npos)
      << help;
  const std::size_t state_dir = help.find("  --state-dir DIR               host keys live here");
  ASSERT_NE(state_dir, std::string::npos) << help;
  EXPECT_EQ(
      help.find(SNIGATE_DEFAULT_STATE_DIR ")\n", state_dir),
      help.find("\n  --authorized-keys", state_dir) - std::strlen(SNIGATE_DEFAULT_STATE_DIR ")"))
      << help;
  EXPECT_NE(help.find("  --client-hello-timeout SECONDS\n                                time"),
            std::string::npos)
      << help;
  std::size_t start = 0;
  for (std::size_t nl = help.find('\n'); nl != std::string::npos; nl = help.find('\n', start)) {
    EXPECT_LE(nl - start, 100u) << help.substr(start, nl - start);
    start = nl + 1;
  }
  EXPECT_EQ(settings_help(kHostkey, false).find("--domain"), std::string::npos);
  EXPECT_NE(settings_help(kServe, true).find("--max-sessions-per-key N"), std::string::npos);
}

// Proves the cluster options are refused apart from cluster mode and without their companions,
// each with one line naming the option and what to add.
TEST(Settings, ClusterOptionsNeedEachOther) {
  EXPECT_EQ(parse({"serve", "--node-id", "n1"}).error,
            "snigate: --node-id is a cluster option: add --cluster-etcd http://HOST:PORT (cluster "
            "mode), or drop it");
  EXPECT_EQ(parse({"serve"}, {{"SNIGATE_CLUSTER_LEASE_TTL", "2"}}).error,
            "snigate: --cluster-lease-ttl is a cluster option: add --cluster-etcd "
            "http://HOST:PORT (cluster mode), or drop it");
  EXPECT_EQ(parse({"serve", "--cluster-etcd", "http://127.0.0.1:2379"}).error,
            "snigate: --cluster-etcd needs --node-id ID (a name unique to this node, e.g. its host "
            "name)");
  EXPECT_EQ(parse({"serve", "--cluster-etcd", "https://e:2379", "--node-id", "n1"}).error,
            "snigate: --cluster-etcd: expected http://HOST:PORT (https is not supported: keep etcd "
            "on a private network), got \"https://e:2379\"");
  EXPECT_EQ(parse({"serve", "--cluster-etcd", "http://a:1,http://b:2", "--node-id", "n/1"}).error,
            "snigate: --node-id: expected a DNS name of at most 64 characters (letters, digits, "
            "'-', labels joined by '.'; it goes in the relay certificate), got \"n/1\"");
  EXPECT_NE(parse({"serve", "--cluster-etcd", "http://a:1", "--node-id", "n1", "--relay-listen",
                   "0.0.0.0:9444"})
                .error.find("--relay-listen needs --cluster-ca"),
            std::string::npos);
  EXPECT_EQ(
      parse({"serve", "--cluster-etcd", "http://a:1", "--node-id", "n1", "--relay-listen",
             "0.0.0.0:9444", "--cluster-ca", "c", "--cluster-cert", "c", "--cluster-key", "k"})
          .error,
      "snigate: --relay-listen 0.0.0.0:9444 listens on every address: add --relay-advertise "
      "HOST:PORT (the address other nodes dial)");
  const auto ok = parse({"serve", "--cluster-etcd", "http://a:1, http://[::1]:2", "--node-id", "n1",
                         "--cluster-lease-ttl", "2"});
  EXPECT_EQ(ok.error, "");
  EXPECT_EQ(ok.config.cluster_lease_ttl, std::chrono::seconds(2));
}

TEST(Settings, BooleanFlagsTakeNoValueOrEqualsAndHaveANoForm) {
  EXPECT_TRUE(parse({"serve"}).config.ssh_on_tls_port);
  EXPECT_FALSE(parse({"serve", "--no-ssh-on-tls-port"}).config.ssh_on_tls_port);
  const auto on = parse({"serve", "--no-ssh-on-tls-port", "--ssh-on-tls-port"});
  EXPECT_EQ(on.error, "");
  EXPECT_TRUE(on.config.ssh_on_tls_port);
  EXPECT_FALSE(parse({"serve", "--ssh-on-tls-port=false"}).config.ssh_on_tls_port);
  EXPECT_FALSE(parse({"serve"}, {{"SNIGATE_SSH_ON_TLS_PORT", "false"}}).config.ssh_on_tls_port);
  EXPECT_NE(parse({"serve", "--ssh-on-tls-port=no"}).error.find("expected true or false"),
            std::string::npos);
  EXPECT_NE(parse({"serve", "--no-ssh-on-tls-port=1"}).error.find("takes no value"),
            std::string::npos);
  const auto file =
      parse({"serve", "--config", "f.toml"}, {}, {{"f.toml", "ssh_on_tls_port = \"x\"\n"}});
  EXPECT_NE(file.error.find("expected true or false"), std::string::npos) << file.error;
}

}  // namespace
}  // namespace gw::app

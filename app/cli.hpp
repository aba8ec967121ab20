// The snigate command line: turns argv, the SNIGATE_* environment and the --config TOML file
// into a command and its configuration (precedence flag > environment > file > default), or
// into one line saying which option is wrong and why (DESIGN section 2). Every setting is one
// row of the table in config.cpp; this file holds the configuration struct (whose member
// initialisers are the defaults) and the argv side. Pure but for main's argc/argv overload,
// which reads the file from disk: the environment is a map and the file comes through a
// FileReader, no Asio types, no exit(); main() prints the error and exits 2. Deliberately not
// here: the `keys` verbs and their own options (keys_command.hpp), which hand their settings
// flags (--state-dir, --authorized-keys, --config) to parse_args(["snigate", "keys", ...]).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#ifndef SNIGATE_DEFAULT_STATE_DIR
#define SNIGATE_DEFAULT_STATE_DIR "./snigate-data"  // CMake's SNIGATE_DEFAULT_STATE_DIR
#endif
#ifndef SNIGATE_VERSION
#define SNIGATE_VERSION "0.1.0"  // keep in step with project(VERSION) in CMakeLists.txt
#endif

namespace gw::app {

/// A listening address as given: host (IPv6 without brackets) and port (0 = pick a free one).
struct ListenAddr {
  std::string host;
  std::uint16_t port = 0;
  friend bool operator==(const ListenAddr&, const ListenAddr&) = default;
};

struct ServeConfig {
  std::vector<ListenAddr> ssh_listen{{"0.0.0.0", 2222}};
  std::vector<ListenAddr> tls_listen{{"0.0.0.0", 8443}};
  std::optional<ListenAddr> admin_listen = ListenAddr{"127.0.0.1", 9090};  ///< nullopt: "off"
  /// The container image builds with -DSNIGATE_DEFAULT_STATE_DIR=/data (see Dockerfile): a
  /// built-in default, unlike an environment variable, stays below a --config file.
  std::string state_dir = SNIGATE_DEFAULT_STATE_DIR;
  std::string authorized_keys;       ///< after parsing: STATE_DIR/authorized_keys unless given
  std::string domain = "localhost";  ///< normalised: lowercase, no trailing dot
  std::string event_log;             ///< empty: off; "-": stdout
  std::string log_level = "info";
  std::optional<std::uint16_t> advertise_port;  ///< nullopt: the first TLS listener's port
  std::chrono::seconds idle_timeout{300};
  std::chrono::seconds client_hello_timeout{3};
  /// ClientHello to the client's first application_data record; 0: no handshake watch at all
  /// (neither this deadline nor the record checks: docs/security.md).
  std::chrono::seconds tls_handshake_timeout{60};
  std::chrono::seconds login_grace{60};  ///< SSH: from accept until authenticated
  unsigned threads = 0;                  ///< 0: one per core
  /// File whose first line is the admin API's bearer token (kept out of `ps` and shell
  /// history); empty: SNIGATE_ADMIN_TOKEN from the environment, or no token.
  std::string admin_token_file;
  std::string admin_token;  ///< --admin-token VALUE (visible in `ps`: prefer the file)
  std::chrono::seconds drain_timeout{30};  ///< SIGTERM: how long open connections may finish
  /// CIDRs (normalised, "10.0.0.0/8") whose connections to the TLS listener start with a
  /// PROXY v2 header naming the visitor (an L4 load balancer); empty: nobody's.
  std::vector<std::string> trusted_proxy;
  /// The TLS listener also takes SSH (told apart by the first bytes), for clients behind
  /// firewalls that let only 443 out.
  bool ssh_on_tls_port = true;
  // Limits against floods and runaway clients (docs/security.md); each is a row of the settings
  // table (config.cpp) with its range and --help line.
  /// A flood at one name, or a client that never answers channel opens, can't take every
  /// descriptor.
  std::uint64_t max_connections_per_endpoint = 10000;
  std::uint64_t max_pending_hellos = 20000;
  /// One host's flood of silent connections can't use up the global budget (NATed users share
  /// an IP, so not too low).
  std::uint64_t max_pending_hellos_per_ip = 256;
  /// Each one is cheap (a key exchange's worth of memory) but held up to the login grace.
  std::uint64_t max_unauthenticated = 256;
  /// More than sessions per key: one host's full set of tunnels may reconnect at once (after a
  /// gateway restart) without being refused.
  std::uint64_t max_unauthenticated_per_ip = 32;
  std::uint64_t max_sessions_per_key = 20;  ///< a runaway autossh loop must not exhaust us
  std::uint64_t max_endpoints_per_key = 50;
  // Cluster mode (CLUSTER.md): all empty = a single node, exactly as without these.
  std::string cluster_etcd;  ///< "http://HOST:PORT[,...]"; empty: not a cluster
  std::string node_id;
  std::optional<ListenAddr> relay_listen;
  std::optional<ListenAddr> relay_advertise;          ///< nullopt: relay_listen's address
  std::string cluster_ca, cluster_cert, cluster_key;  ///< the relay's mutual TLS
  /// The node lease's TTL (advanced: tests use 2 s); keepalive every 30 %, lost at 80 %.
  std::chrono::seconds cluster_lease_ttl{10};
};

enum class Command { serve, hostkey, keys, help, version };

/// The process environment as NAME -> value (only SNIGATE_* names are read).
using Environment = std::map<std::string, std::string, std::less<>>;

/// Reads the --config file: its text, or nullopt with `error` set to why (e.g. "No such file
/// or directory"). Tests pass a fake; main passes read_text_file (config.hpp).
using FileReader =
    std::function<std::optional<std::string>(const std::string& path, std::string& error)>;

struct ParseResult {
  Command command = Command::help;
  ServeConfig config;         ///< for serve; hostkey uses state_dir, keys authorized_keys
  std::string error;          ///< empty on success, else one line starting "snigate: " (no newline)
  bool print_config = false;  ///< serve --print-config: print to_toml() and exit 0
  /// Where each setting's value came from, by config key ("tls_listen"): "flag",
  /// "env SNIGATE_TLS_LISTEN", "FILE:LINE" or "default". Every key is present.
  std::map<std::string, std::string> origins;
};

/// Parses `snigate` argv (argv[0] is ignored) over the environment and the config file named
/// by --config or SNIGATE_CONFIG. Accepts `--opt value` and `--opt=value`; a repeated
/// single-valued option keeps its last value; within each layer (flags, environment, file)
/// the first --ssh-listen/--tls-listen replaces what lower layers gave and later ones add to
/// it. On any problem `error` names where and what is wrong, e.g.
/// `snigate: --tls-listen: expected HOST:PORT, got "8443x"`,
/// `snigate: SNIGATE_THREADS: expected a number ...`, `snigate: gw.toml:3: idle_timeout: ...`
/// or `snigate: unknown option --foo (see snigate --help)`. `hostkey` takes --state-dir and
/// --config; `keys` takes --state-dir, --authorized-keys and --config only (run_keys_command
/// passes its settings flags here, its verb and verb options it keeps).
ParseResult parse_args(const std::vector<std::string>& args, const Environment& env,
                       const FileReader& read_file);
/// The same with no environment and no readable files (a --config is an error).
ParseResult parse_args(const std::vector<std::string>& args);
/// main's entry: argv, the given environment, config files read from disk.
ParseResult parse_args(int argc, const char* const* argv, const Environment& env = {});

/// Parses HOST:PORT, [IPV6]:PORT; port 0..65535. nullopt if it is not of that shape.
std::optional<ListenAddr> parse_listen_addr(std::string_view text);

/// Formats a listening address back into the HOST:PORT / [IPV6]:PORT form parse_listen_addr
/// reads.
std::string format_listen_addr(const ListenAddr& addr);

/// The text `snigate --help` prints (ends with a newline).
std::string usage_text();

}  // namespace gw::app

// The snigate command line: turns argv into a command and its configuration, or into one
// line saying which option is wrong and why (DESIGN section 2). Pure: no I/O, no Asio types,
// no exit(); main() prints the error and exits 2. Deliberately not here yet: the TOML config
// file, SNIGATE_* environment variables and the `keys` subcommands.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
  std::string state_dir = "./snigate-data";
  std::string authorized_keys;       ///< after parsing: STATE_DIR/authorized_keys unless given
  std::string domain = "localhost";  ///< normalised: lowercase, no trailing dot
  std::string event_log;             ///< empty: off; "-": stdout
  std::string log_level = "info";
  std::optional<std::uint16_t> advertise_port;  ///< nullopt: the first TLS listener's port
  std::chrono::seconds idle_timeout{300};
  std::chrono::seconds client_hello_timeout{3};
  unsigned threads = 0;  ///< 0: one per core
  /// File whose first line is the admin API's bearer token (kept out of `ps` and shell
  /// history); empty: SNIGATE_ADMIN_TOKEN from the environment, or no token.
  std::string admin_token_file;
  std::string admin_token;  ///< --admin-token VALUE (visible in `ps`: prefer the file)
  std::chrono::seconds drain_timeout{30};  ///< SIGTERM: how long open connections may finish
};

enum class Command { serve, hostkey, help, version };

struct ParseResult {
  Command command = Command::help;
  ServeConfig config;  ///< for serve; hostkey uses state_dir
  std::string error;   ///< empty on success, else one line starting "snigate: " (no newline)
};

/// Parses `snigate` argv (argv[0] is ignored). Accepts `--opt value` and `--opt=value`; a
/// repeated single-valued option keeps its last value; the first --ssh-listen/--tls-listen
/// replaces the default and later ones add to it. On any problem `error` names the option
/// and what is wrong, e.g. `snigate: --tls-listen: expected HOST:PORT, got "8443x"` or
/// `snigate: unknown option --foo (see snigate --help)`; `keys` and `--config` are refused
/// as not implemented yet.
ParseResult parse_args(int argc, const char* const* argv);
ParseResult parse_args(const std::vector<std::string>& args);

/// Parses HOST:PORT, [IPV6]:PORT; port 0..65535. nullopt if it is not of that shape.
std::optional<ListenAddr> parse_listen_addr(std::string_view text);

/// The text `snigate --help` prints (ends with a newline).
std::string usage_text();

}  // namespace gw::app

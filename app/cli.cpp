// Command-line parsing for snigate and the layering of flags over the environment over the
// config file; see cli.hpp. Deliberately table-free string handling: every setting is one
// branch in apply_setting(), which reads top to bottom like DESIGN section 2, and every layer
// goes through it, so a value means the same as a flag, in SNIGATE_* or in the file.
#include "app/cli.hpp"

#include <algorithm>
#include <array>
#include <charconv>

#include "app/config.hpp"
#include "common/printable.hpp"

namespace gw::app {
namespace {

constexpr std::size_t kMaxDomainBytes = 253;  // RFC 1035 presentation form, no final dot
constexpr std::size_t kMaxLabelBytes = 63;    // RFC 1035 label limit
// Longer than any sane idle period; keeps the value far from chrono overflow.
constexpr std::uint64_t kMaxIdleSeconds = 7 * 24 * 3600;
// A ClientHello that takes over a minute is an attack or a broken client, not a slow link.
constexpr std::uint64_t kMaxClientHelloSeconds = 60;
// OpenSSH allows 120 s to log in; ten minutes is a stuck client, not a slow one.
constexpr std::uint64_t kMaxLoginGraceSeconds = 600;
// More threads than this is a typo, not a machine.
constexpr std::uint64_t kMaxThreads = 1024;

constexpr std::array<std::string_view, 5> kLogLevels = {"trace", "debug", "info", "warn", "error"};

std::string quoted(std::string_view s) { return "\"" + printable(s, 100) + "\""; }

std::string option_error(std::string_view option, std::string_view what) {
  return "snigate: " + std::string(option) + ": " + std::string(what);
}

/// A whole decimal number in [min, max], no sign, no spaces.
std::optional<std::uint64_t> parse_number(std::string_view s, std::uint64_t min,
                                          std::uint64_t max) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || v < min || v > max) {
    return std::nullopt;
  }
  return v;
}

bool is_ldh(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// `s` looks like a part of an inet_aton() address: decimal, octal or 0x-hex.
bool is_numeric_part(std::string_view s) {
  if (s.size() > 2 && s.starts_with("0x")) {
    return std::all_of(s.begin() + 2, s.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  }
  return all_digits(s);
}

/// Normalises `name` (lowercase, one trailing dot dropped) and checks it with the rules of
/// tunnel::Hostname (no wildcard), so the wiring code can rely on it. Returns the problem.
std::optional<std::string> check_domain(std::string& name) {
  std::transform(name.begin(), name.end(), name.begin(), [](char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  });
  if (!name.empty() && name.back() == '.') {
    name.pop_back();
  }
  if (name.empty()) {
    return "must not be empty";
  }
  if (name.size() > kMaxDomainBytes) {
    return "longer than 253 characters";
  }
  std::size_t labels = 0;
  bool all_numeric = true;
  std::string_view rest = name;
  std::string_view label;
  for (;;) {
    const std::size_t dot = rest.find('.');
    label = rest.substr(0, dot);
    ++labels;
    if (label.empty()) {
      return "empty label in " + quoted(name);
    }
    if (label.size() > kMaxLabelBytes) {
      return "label longer than 63 characters in " + quoted(name);
    }
    if (!std::all_of(label.begin(), label.end(), is_ldh)) {
      return "expected a DNS name (letters, digits, hyphens and dots), got " + quoted(name);
    }
    if (label.front() == '-' || label.back() == '-') {
      return "a label may not start or end with a hyphen in " + quoted(name);
    }
    all_numeric = all_numeric && is_numeric_part(label);
    if (dot == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(dot + 1);
  }
  if (all_numeric && labels <= 4) {
    return "expected a DNS name, got the IP address " + quoted(name);
  }
  if (all_digits(label)) {
    return "the last label may not be all digits in " + quoted(name);
  }
  return std::nullopt;
}

bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.';
}

bool is_ipv6_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
         c == '.';
}

/// Parses HOST:PORT; on failure says what is wrong (without the option name).
std::optional<ListenAddr> parse_listen(std::string_view text, std::string& why) {
  why = "expected HOST:PORT, got " + quoted(text);
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos || text.substr(close + 1, 1) != ":") {
      why = "expected [IPV6]:PORT, got " + quoted(text);
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    // An optional zone (fe80::1%eth0) may follow the address.
    const std::size_t percent = host.find('%');
    const std::string_view address = host.substr(0, percent);
    const std::string_view zone =
        percent == std::string_view::npos ? std::string_view("x") : host.substr(percent + 1);
    if (address.find(':') == std::string_view::npos ||
        !std::all_of(address.begin(), address.end(), is_ipv6_char) || zone.empty() ||
        !std::all_of(zone.begin(), zone.end(), is_host_char)) {
      why = "expected an IPv6 address inside [ ], got " + quoted(text);
      return std::nullopt;
    }
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      why = "IPv6 addresses need brackets, as [::]:PORT; got " + quoted(text);
      return std::nullopt;
    }
    if (host.empty() || !std::all_of(host.begin(), host.end(), is_host_char)) {
      return std::nullopt;
    }
  }
  const auto number = parse_number(port, 0, 65535);
  if (!number) {
    why = "port must be a number from 0 to 65535, got " + quoted(text);
    return std::nullopt;
  }
  return ListenAddr{std::string(host), static_cast<std::uint16_t>(*number)};
}

/// Which options a subcommand takes.
enum class Scope { serve, hostkey };

/// The config key of a flag: "--tls-listen" -> "tls_listen".
std::string key_of(std::string_view flag) {
  std::string key(flag.substr(2));
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

bool known_option(std::string_view name, Scope scope) {
  if (name == "--help" || name == "--config") {
    return true;
  }
  if (scope == Scope::hostkey) {
    return name == "--state-dir";
  }
  return name == "--print-config" || (name.starts_with("--") && is_config_key(key_of(name)));
}

/// Applies one value of config key `key` ("tls_listen"); `first_in_layer` makes a list key
/// drop what lower layers gave. Returns what is wrong (without the option's name), or empty.
std::string apply_setting(std::string_view key, const std::string& value, bool first_in_layer,
                          ServeConfig& c) {
  if (key == "ssh_listen" || key == "tls_listen") {
    std::string why;
    const auto addr = parse_listen(value, why);
    if (!addr) {
      return why;
    }
    auto& list = key == "ssh_listen" ? c.ssh_listen : c.tls_listen;
    if (first_in_layer) {
      list.clear();
    }
    list.push_back(*addr);
    return {};
  }
  if (key == "admin_listen") {
    if (value == "off") {
      c.admin_listen.reset();
      return {};
    }
    std::string why;
    const auto addr = parse_listen(value, why);
    if (!addr) {
      return why + " (or \"off\")";
    }
    c.admin_listen = *addr;
    return {};
  }
  if (key == "state_dir" || key == "authorized_keys" || key == "event_log" ||
      key == "admin_token_file" || key == "admin_token") {
    if (value.empty()) {
      return "must not be empty";
    }
    (key == "state_dir"          ? c.state_dir
     : key == "authorized_keys"  ? c.authorized_keys
     : key == "event_log"        ? c.event_log
     : key == "admin_token_file" ? c.admin_token_file
                                 : c.admin_token) = value;
    return {};
  }
  if (key == "drain_timeout") {
    const auto seconds = parse_number(value, 0, kMaxIdleSeconds);
    if (!seconds) {
      return "expected whole seconds from 0 to " + std::to_string(kMaxIdleSeconds) + ", got " +
             quoted(value);
    }
    c.drain_timeout = std::chrono::seconds(*seconds);
    return {};
  }
  if (key == "domain") {
    std::string domain = value;
    if (const auto why = check_domain(domain)) {
      return *why;
    }
    c.domain = std::move(domain);
    return {};
  }
  if (key == "advertise_port") {
    const auto port = parse_number(value, 1, 65535);
    if (!port) {
      return "expected a port from 1 to 65535, got " + quoted(value);
    }
    c.advertise_port = static_cast<std::uint16_t>(*port);
    return {};
  }
  if (key == "log_level") {
    if (std::find(kLogLevels.begin(), kLogLevels.end(), value) == kLogLevels.end()) {
      return "expected trace, debug, info, warn or error, got " + quoted(value);
    }
    c.log_level = value;
    return {};
  }
  if (key == "idle_timeout" || key == "client_hello_timeout" || key == "login_grace") {
    const std::uint64_t max = key == "idle_timeout"           ? kMaxIdleSeconds
                              : key == "client_hello_timeout" ? kMaxClientHelloSeconds
                                                              : kMaxLoginGraceSeconds;
    const auto seconds = parse_number(value, 1, max);
    if (!seconds) {
      return "expected whole seconds from 1 to " + std::to_string(max) + ", got " + quoted(value);
    }
    (key == "idle_timeout"           ? c.idle_timeout
     : key == "client_hello_timeout" ? c.client_hello_timeout
                                     : c.login_grace) = std::chrono::seconds(*seconds);
    return {};
  }
  for (const LimitInfo& l : kLimits) {
    if (key == l.key) {
      const auto n = parse_number(value, l.min, l.max);
      if (!n) {
        return "expected a number from " + std::to_string(l.min) + " to " +
               std::to_string(l.max) + ", got " + quoted(value);
      }
      c.*l.field = *n;
      return {};
    }
  }
  if (key == "threads") {
    const auto n = parse_number(value, 0, kMaxThreads);
    if (!n) {
      return "expected a number from 0 (one per core) to " + std::to_string(kMaxThreads) +
             ", got " + quoted(value);
    }
    c.threads = static_cast<unsigned>(*n);
    return {};
  }
  return "unknown setting";  // unreachable: callers check is_config_key() first
}

ParseResult fail(std::string error) {
  ParseResult r;
  r.error = std::move(error);
  return r;
}

/// Precedence ranks of the layers; a higher one overrides a lower one.
enum class Rank { default_value, file, env, flag };

/// Applies one layer's settings (in order) onto `r`, recording origins. The admin token has
/// two spellings (a value or a file); a layer that sets one drops the other when that came
/// from a lower layer, so `--admin-token-file` beats `SNIGATE_ADMIN_TOKEN`.
std::string apply_layer(const std::vector<Setting>& settings, Rank rank, ParseResult& r,
                        std::map<std::string, Rank>& ranks) {
  std::map<std::string, bool> seen;
  for (const Setting& s : settings) {
    for (const std::string& value : s.values) {
      bool& was_seen = seen[s.key];
      std::string why = apply_setting(s.key, value, !was_seen, r.config);
      if (!why.empty()) {
        return "snigate: " + s.where + ": " + why;
      }
      was_seen = true;
    }
    r.origins[s.key] = s.origin;
    ranks[s.key] = rank;
    if (s.key == "admin_token" || s.key == "admin_token_file") {
      const std::string other = s.key == "admin_token" ? "admin_token_file" : "admin_token";
      if (ranks[other] < rank) {
        (other == "admin_token" ? r.config.admin_token : r.config.admin_token_file).clear();
        r.origins[other] = "default";
        ranks[other] = Rank::default_value;
      }
    }
  }
  return {};
}

/// Parses the options after a subcommand into `r.config`: flags first for their syntax, then
/// the layers from the bottom up (file, environment, flags), each value checked as it lands.
ParseResult parse_options(const std::vector<std::string>& args, std::size_t first, Command command,
                          Scope scope, const Environment& env, const FileReader& read_file) {
  ParseResult r;
  r.command = command;
  std::vector<Setting> flags;
  std::string config_path;
  std::string config_where;
  for (std::size_t i = first; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      r.command = Command::help;
      return r;
    }
    if (!arg.starts_with("--")) {
      return fail("snigate: " + std::string(command == Command::serve ? "serve" : "hostkey") +
                  ": unexpected argument " + quoted(arg) + " (see snigate --help)");
    }
    const std::size_t eq = arg.find('=');
    const std::string name = arg.substr(0, eq);
    if (!known_option(name, scope)) {
      return fail("snigate: unknown option " + printable(name, 100) + " (see snigate --help)");
    }
    if (name == "--print-config") {
      if (eq != std::string::npos) {
        return fail(option_error(name, "takes no value"));
      }
      r.print_config = true;
      continue;
    }
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < args.size() && !args[i + 1].starts_with("--")) {
      value = args[++i];
    } else {
      return fail(option_error(name, "missing value"));
    }
    if (name == "--config") {
      if (value.empty()) {
        return fail(option_error(name, "must not be empty"));
      }
      config_path = value;
      config_where = "--config";
      continue;
    }
    flags.push_back({key_of(name), {value}, name, "flag"});
  }

  for (const auto key : config_keys()) {
    r.origins[std::string(key)] = "default";
  }
  std::map<std::string, Rank> ranks;

  if (config_path.empty()) {
    if (const auto it = env.find("SNIGATE_CONFIG"); it != env.end() && !it->second.empty()) {
      config_path = it->second;
      config_where = "SNIGATE_CONFIG";
    }
  }
  if (!config_path.empty()) {
    std::string why = "cannot read files here";
    const std::optional<std::string> text =
        read_file ? read_file(config_path, why) : std::optional<std::string>();
    if (!text) {
      return fail("snigate: " + config_where + " " + printable(config_path, 200) +
                  ": cannot read: " + why);
    }
    SettingsResult file = parse_config_toml(*text, config_path);
    if (!file.error.empty()) {
      return fail(std::move(file.error));
    }
    if (std::string error = apply_layer(file.settings, Rank::file, r, ranks); !error.empty()) {
      return fail(std::move(error));
    }
  }

  SettingsResult from_env = settings_from_environment(env);
  if (!from_env.error.empty()) {
    return fail(std::move(from_env.error));
  }
  if (std::string error = apply_layer(from_env.settings, Rank::env, r, ranks); !error.empty()) {
    return fail(std::move(error));
  }
  if (std::string error = apply_layer(flags, Rank::flag, r, ranks); !error.empty()) {
    return fail(std::move(error));
  }

  if (r.config.authorized_keys.empty()) {
    const std::string& dir = r.config.state_dir;
    r.config.authorized_keys = dir + (dir.ends_with('/') ? "" : "/") + "authorized_keys";
    r.origins["authorized_keys"] = "default (STATE_DIR/authorized_keys)";
  }
  return r;
}

}  // namespace

std::optional<ListenAddr> parse_listen_addr(std::string_view text) {
  std::string why;
  return parse_listen(text, why);
}

ParseResult parse_args(const std::vector<std::string>& args) {
  return parse_args(args, Environment{}, FileReader{});
}

ParseResult parse_args(const std::vector<std::string>& args, const Environment& env,
                       const FileReader& read_file) {
  if (args.size() < 2) {
    return fail("snigate: no command given (see snigate --help)");
  }
  const std::string& command = args[1];
  if (command == "--help" || command == "-h" || command == "help") {
    ParseResult r;
    r.command = Command::help;
    return r;
  }
  if (command == "--version" || command == "-V" || command == "version") {
    ParseResult r;
    r.command = Command::version;
    return r;
  }
  if (command == "serve") {
    return parse_options(args, 2, Command::serve, Scope::serve, env, read_file);
  }
  if (command == "hostkey") {
    return parse_options(args, 2, Command::hostkey, Scope::hostkey, env, read_file);
  }
  if (command == "keys") {
    return fail("snigate: keys: not implemented yet; edit authorized_keys by hand");
  }
  if (command.starts_with("-")) {
    return fail("snigate: unknown option " + printable(command.substr(0, command.find('=')), 100) +
                " (see snigate --help)");
  }
  return fail("snigate: unknown command " + quoted(command) + " (see snigate --help)");
}

ParseResult parse_args(int argc, const char* const* argv, const Environment& env) {
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    args.emplace_back(argv[i] != nullptr ? argv[i] : "");
  }
  return parse_args(args, env, read_text_file);
}

std::string format_listen_addr(const ListenAddr& addr) {
  const bool v6 = addr.host.find(':') != std::string::npos;
  return (v6 ? "[" + addr.host + "]" : addr.host) + ":" + std::to_string(addr.port);
}

std::string usage_text() {
  std::string text = R"(usage: snigate serve [--config FILE] [--print-config] [options]
       snigate hostkey [--state-dir DIR] [--config FILE]
       snigate --version | --help

Route public TLS connections by SNI to tunnels opened with `ssh -R NAME:443:HOST:PORT`.

serve options (--opt VALUE or --opt=VALUE):
  --config FILE                 read settings from this TOML file (or SNIGATE_CONFIG)
  --print-config                print the effective configuration as TOML and exit
  --ssh-listen HOST:PORT        SSH listener (default 0.0.0.0:2222); repeatable; IPv6 as [::]:2222;
                                port 0 picks a free port
  --tls-listen HOST:PORT        public TLS listener (default 0.0.0.0:8443); repeatable
  --admin-listen HOST:PORT|off  HTTP admin API and /metrics (default 127.0.0.1:9090)
  --state-dir DIR               host keys live here, generated on first start
                                (default ./snigate-data)
  --authorized-keys PATH        a file or a directory of files (default STATE_DIR/authorized_keys);
                                re-read on change, no restart
  --domain NAME                 generated hostnames are <random>.NAME (default localhost)
  --advertise-port N            port shown in tls:// URLs (default: the TLS listener's port)
  --event-log PATH|-            connection and session events as JSON lines ("-" = stdout;
                                default off)
  --log-level LEVEL             trace|debug|info|warn|error (default info)
  --idle-timeout SECONDS        close tunnels idle this long in either direction (default 300)
  --client-hello-timeout SECONDS
                                time a client has to send its ClientHello (default 3)
  --login-grace SECONDS         time an SSH client has to authenticate (default 60)
  --threads N                   I/O threads (default 0 = one per core)
  --admin-token TOKEN           bearer token for the admin API (required for a non-loopback
                                --admin-listen); visible in `ps`, so prefer:
  --admin-token-file FILE       the token is this file's first line (or set SNIGATE_ADMIN_TOKEN)
  --drain-timeout SECONDS       on SIGTERM/SIGINT, how long open connections may finish
                                (default 30; a second signal stops at once)
)";
  // The limits come from one table (cli.hpp), so --help, the parser and --print-config agree.
  text += "\nlimits (each refused with a message or a TLS alert; see docs/security.md):\n";
  const ServeConfig defaults;
  for (const LimitInfo& l : kLimits) {
    std::string flag = "--" + std::string(l.key) + " N";
    std::replace(flag.begin(), flag.end(), '_', '-');
    text += "  " + flag + std::string(flag.size() < 34 ? 34 - flag.size() : 1, ' ') +
            std::string(l.help) + " (default " + std::to_string(defaults.*l.field) + ")\n";
  }
  text += R"(
Every option is also a key of the --config file, without "--" and with "_" for "-"
(tls_listen = ["0.0.0.0:8443"], idle_timeout = 300, admin_listen = "off"), and an environment
variable SNIGATE_<KEY> (SNIGATE_TLS_LISTEN=0.0.0.0:8443,[::]:8443: lists comma-separated; an
empty variable counts as unset). Precedence: flag > environment > file > default.

keys (see snigate keys --help):
  snigate keys add [--name N] [--allow PATTERN]... [--from PATTERN]... [--expires DATE] PUBKEY
  snigate keys list [--json]
  snigate keys remove FINGERPRINT|NAME

Bad options are refused with one line naming the option; the exit status is then 2.
)";
  return text;
}

}  // namespace gw::app

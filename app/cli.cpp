// Command-line parsing for snigate; see cli.hpp. Deliberately table-free string handling:
// every option is one branch in apply_serve_option(), which reads top to bottom like
// DESIGN section 2.
#include "app/cli.hpp"

#include <algorithm>
#include <array>
#include <charconv>

#include "common/printable.hpp"

namespace gw::app {
namespace {

constexpr std::size_t kMaxDomainBytes = 253;  // RFC 1035 presentation form, no final dot
constexpr std::size_t kMaxLabelBytes = 63;    // RFC 1035 label limit
// Longer than any sane idle period; keeps the value far from chrono overflow.
constexpr std::uint64_t kMaxIdleSeconds = 7 * 24 * 3600;
// A ClientHello that takes over a minute is an attack or a broken client, not a slow link.
constexpr std::uint64_t kMaxClientHelloSeconds = 60;
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

bool known_option(std::string_view name, Scope scope) {
  static constexpr std::array<std::string_view, 17> kServe = {
      "--ssh-listen",      "--tls-listen",   "--admin-listen",         "--state-dir",
      "--authorized-keys", "--domain",       "--advertise-port",       "--event-log",
      "--log-level",       "--idle-timeout", "--client-hello-timeout", "--threads",
      "--config",          "--help",         "--admin-token-file",     "--drain-timeout",
      "--admin-token"};
  if (scope == Scope::hostkey) {
    return name == "--state-dir" || name == "--help";
  }
  return std::find(kServe.begin(), kServe.end(), name) != kServe.end();
}

/// Applies one `--name value`; returns the error line, or empty.
std::string apply_serve_option(std::string_view name, const std::string& value, ServeConfig& c,
                               bool& ssh_given, bool& tls_given) {
  if (name == "--ssh-listen" || name == "--tls-listen") {
    std::string why;
    const auto addr = parse_listen(value, why);
    if (!addr) {
      return option_error(name, why);
    }
    bool& given = name == "--ssh-listen" ? ssh_given : tls_given;
    auto& list = name == "--ssh-listen" ? c.ssh_listen : c.tls_listen;
    if (!given) {
      list.clear();
      given = true;
    }
    list.push_back(*addr);
    return {};
  }
  if (name == "--admin-listen") {
    if (value == "off") {
      c.admin_listen.reset();
      return {};
    }
    std::string why;
    const auto addr = parse_listen(value, why);
    if (!addr) {
      return option_error(name, why + " (or \"off\")");
    }
    c.admin_listen = *addr;
    return {};
  }
  if (name == "--state-dir" || name == "--authorized-keys" || name == "--event-log" ||
      name == "--admin-token-file" || name == "--admin-token") {
    if (value.empty()) {
      return option_error(name, "must not be empty");
    }
    (name == "--state-dir"          ? c.state_dir
     : name == "--authorized-keys"  ? c.authorized_keys
     : name == "--event-log"        ? c.event_log
     : name == "--admin-token-file" ? c.admin_token_file
                                    : c.admin_token) = value;
    return {};
  }
  if (name == "--drain-timeout") {
    const auto seconds = parse_number(value, 0, kMaxIdleSeconds);
    if (!seconds) {
      return option_error(name, "expected whole seconds from 0 to " +
                                    std::to_string(kMaxIdleSeconds) + ", got " + quoted(value));
    }
    c.drain_timeout = std::chrono::seconds(*seconds);
    return {};
  }
  if (name == "--domain") {
    std::string domain = value;
    if (const auto why = check_domain(domain)) {
      return option_error(name, *why);
    }
    c.domain = std::move(domain);
    return {};
  }
  if (name == "--advertise-port") {
    const auto port = parse_number(value, 1, 65535);
    if (!port) {
      return option_error(name, "expected a port from 1 to 65535, got " + quoted(value));
    }
    c.advertise_port = static_cast<std::uint16_t>(*port);
    return {};
  }
  if (name == "--log-level") {
    if (std::find(kLogLevels.begin(), kLogLevels.end(), value) == kLogLevels.end()) {
      return option_error(name, "expected trace, debug, info, warn or error, got " + quoted(value));
    }
    c.log_level = value;
    return {};
  }
  if (name == "--idle-timeout" || name == "--client-hello-timeout") {
    const std::uint64_t max = name == "--idle-timeout" ? kMaxIdleSeconds : kMaxClientHelloSeconds;
    const auto seconds = parse_number(value, 1, max);
    if (!seconds) {
      return option_error(name, "expected whole seconds from 1 to " + std::to_string(max) +
                                    ", got " + quoted(value));
    }
    (name == "--idle-timeout" ? c.idle_timeout : c.client_hello_timeout) =
        std::chrono::seconds(*seconds);
    return {};
  }
  if (name == "--threads") {
    const auto n = parse_number(value, 0, kMaxThreads);
    if (!n) {
      return option_error(name, "expected a number from 0 (one per core) to " +
                                    std::to_string(kMaxThreads) + ", got " + quoted(value));
    }
    c.threads = static_cast<unsigned>(*n);
    return {};
  }
  if (name == "--config") {
    return option_error(name, "config files are not supported yet; use options");
  }
  return "snigate: unknown option " + std::string(name) + " (see snigate --help)";
}

ParseResult fail(std::string error) {
  ParseResult r;
  r.error = std::move(error);
  return r;
}

/// Parses the options after a subcommand into `r.config`.
ParseResult parse_options(const std::vector<std::string>& args, std::size_t first, Command command,
                          Scope scope) {
  ParseResult r;
  r.command = command;
  bool ssh_given = false;
  bool tls_given = false;
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
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < args.size() && !args[i + 1].starts_with("--")) {
      value = args[++i];
    } else {
      return fail(option_error(name, "missing value"));
    }
    std::string error = apply_serve_option(name, value, r.config, ssh_given, tls_given);
    if (!error.empty()) {
      return fail(std::move(error));
    }
  }
  if (r.config.authorized_keys.empty()) {
    const std::string& dir = r.config.state_dir;
    r.config.authorized_keys = dir + (dir.ends_with('/') ? "" : "/") + "authorized_keys";
  }
  return r;
}

}  // namespace

std::optional<ListenAddr> parse_listen_addr(std::string_view text) {
  std::string why;
  return parse_listen(text, why);
}

ParseResult parse_args(const std::vector<std::string>& args) {
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
    return parse_options(args, 2, Command::serve, Scope::serve);
  }
  if (command == "hostkey") {
    return parse_options(args, 2, Command::hostkey, Scope::hostkey);
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

ParseResult parse_args(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    args.emplace_back(argv[i] != nullptr ? argv[i] : "");
  }
  return parse_args(args);
}

std::string usage_text() {
  return R"(usage: snigate serve [options]
       snigate hostkey [--state-dir DIR]
       snigate --version | --help

Route public TLS connections by SNI to tunnels opened with `ssh -R NAME:443:HOST:PORT`.

serve options (--opt VALUE or --opt=VALUE):
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
  --threads N                   I/O threads (default 0 = one per core)
  --admin-token TOKEN           bearer token for the admin API (required for a non-loopback
                                --admin-listen); visible in `ps`, so prefer:
  --admin-token-file FILE       the token is this file's first line (or set SNIGATE_ADMIN_TOKEN)
  --drain-timeout SECONDS       on SIGTERM/SIGINT, how long open connections may finish
                                (default 30; a second signal stops at once)

keys (see snigate keys --help):
  snigate keys add [--name N] [--allow PATTERN]... [--from PATTERN]... [--expires DATE] PUBKEY
  snigate keys list [--json]
  snigate keys remove FINGERPRINT|NAME

Bad options are refused with one line naming the option; the exit status is then 2.
)";
}

}  // namespace gw::app

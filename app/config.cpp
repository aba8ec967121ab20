// The settings table, the config file and environment layers, and --print-config; see
// config.hpp. toml++ does the TOML grammar (Debian's libtomlplusplus, compiled mode); this file
// maps its tree onto the table's keys and refuses what the flags could not express.
//
// Why the layering is ours and not an option library's (boost::program_options, CLI11): we
// need the environment above the file (a container's `-e` must beat a file baked into a
// volume), a list from a higher layer to replace the lower one's whole list, and every value to
// carry where it came from (`gw.toml:3`, `SNIGATE_THREADS`, `--threads`) into its one-line error
// and into --print-config. Those libraries rank their sources differently and lose the file's
// line numbers; the whole layering here is one loop per layer over this table.
#include "app/config.hpp"

#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>

#include "cluster/registry_codec.hpp"
#include "common/cidr.hpp"
#include "common/printable.hpp"
#include "common/unique_handle.hpp"
#include "tunnel/hostname.hpp"

namespace gw::app {
namespace {

// A config file is a screenful of keys; anything this large is the wrong file.
constexpr std::size_t kMaxConfigBytes = 1024 * 1024;

// Longer than any sane idle period; keeps the value far from chrono overflow.
constexpr std::uint64_t kMaxIdleSeconds = 7 * 24 * 3600;
// A ClientHello that takes over a minute is an attack or a broken client, not a slow link.
constexpr std::uint64_t kMaxClientHelloSeconds = 60;
// OpenSSH allows 120 s to log in; ten minutes is a stuck client, not a slow one.
constexpr std::uint64_t kMaxLoginGraceSeconds = 600;
// More threads than this is a typo, not a machine.
constexpr std::uint64_t kMaxThreads = 1024;
// Limits: high enough for any one gateway, low enough that a typo (an extra zero) is caught.
constexpr std::uint64_t kMaxPublicLimit = 1000000;
constexpr std::uint64_t kMaxSshLimit = 100000;

constexpr std::string_view kLogLevels[] = {"trace", "debug", "info", "warn", "error"};

std::string quoted(std::string_view s) { return "\"" + printable(s, 100) + "\""; }

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

/// The --domain refusal for one of tunnel::Hostname's reasons, in the words of the flag.
std::string domain_problem(std::error_code ec, const std::string& name) {
  using tunnel::hostname_errc;
  switch (static_cast<hostname_errc>(ec.value())) {
    case hostname_errc::empty:
      return "must not be empty";
    case hostname_errc::too_long:
      return "longer than 253 characters";
    case hostname_errc::empty_label:
      return "empty label in " + quoted(name);
    case hostname_errc::label_too_long:
      return "label longer than 63 characters in " + quoted(name);
    case hostname_errc::label_hyphen:
      return "a label may not start or end with a hyphen in " + quoted(name);
    case hostname_errc::ip_literal:
      return "expected a DNS name, got the IP address " + quoted(name);
    case hostname_errc::all_numeric_tld:
      return "the last label may not be all digits in " + quoted(name);
    case hostname_errc::wildcard_position:
    case hostname_errc::wildcard_not_allowed:
      return "give the domain itself, without a wildcard (generated names are <random>.NAME), "
             "got " +
             quoted(name);
    case hostname_errc::bad_character:
      break;
  }
  return "expected a DNS name (letters, digits, hyphens and dots), got " + quoted(name);
}

// ---- the value types: one apply/show pair each, over a ServeConfig member ----------------

template <auto M>
std::string apply_listen_list(const SettingSpec&, const std::string& value, bool first,
                              ServeConfig& c) {
  std::string why;
  const auto addr = parse_listen(value, why);
  if (!addr) {
    return why;
  }
  if (first) {
    (c.*M).clear();
  }
  (c.*M).push_back(*addr);
  return {};
}
template <auto M>
std::vector<std::string> show_listen_list(const ServeConfig& c) {
  std::vector<std::string> out;
  for (const auto& a : c.*M) {
    out.push_back(format_listen_addr(a));
  }
  return out;
}

template <auto M>
std::string apply_listen_or_off(const SettingSpec&, const std::string& value, bool,
                                ServeConfig& c) {
  if (value == "off") {
    (c.*M).reset();
    return {};
  }
  std::string why;
  const auto addr = parse_listen(value, why);
  if (!addr) {
    return why + " (or \"off\")";
  }
  c.*M = *addr;
  return {};
}
template <auto M>
std::vector<std::string> show_listen_or_off(const ServeConfig& c) {
  return {c.*M ? format_listen_addr(*(c.*M)) : "off"};
}

template <auto M>
std::string apply_text(const SettingSpec& s, const std::string& value, bool, ServeConfig& c) {
  if (value.empty()) {
    return "must not be empty";
  }
  if (!s.choices.empty() &&
      std::find(s.choices.begin(), s.choices.end(), value) == s.choices.end()) {
    std::string list;
    for (std::size_t i = 0; i < s.choices.size(); ++i) {
      list += (i == 0 ? "" : i + 1 == s.choices.size() ? " or " : ", ") + std::string(s.choices[i]);
    }
    return "expected " + list + ", got " + quoted(value);
  }
  c.*M = value;
  return {};
}
template <auto M>
std::vector<std::string> show_text(const ServeConfig& c) {
  return (c.*M).empty() ? std::vector<std::string>{} : std::vector<std::string>{c.*M};
}

template <auto M>
std::string apply_domain(const SettingSpec&, const std::string& value, bool, ServeConfig& c) {
  const auto name = tunnel::Hostname::parse(value, false);
  if (!name) {
    std::string shown = value;
    std::transform(shown.begin(), shown.end(), shown.begin(), [](char ch) {
      return (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
    });
    if (shown.ends_with('.')) {
      shown.pop_back();
    }
    return domain_problem(name.error(), shown);
  }
  c.*M = name->str();
  return {};
}

template <auto M>
std::string apply_port(const SettingSpec&, const std::string& value, bool, ServeConfig& c) {
  const auto port = parse_number(value, 1, 65535);
  if (!port) {
    return "expected a port from 1 to 65535, got " + quoted(value);
  }
  c.*M = static_cast<std::uint16_t>(*port);
  return {};
}
template <auto M>
std::vector<std::string> show_optional_number(const ServeConfig& c) {
  return c.*M ? std::vector<std::string>{std::to_string(*(c.*M))} : std::vector<std::string>{};
}

template <auto M>
std::string apply_seconds(const SettingSpec& s, const std::string& value, bool, ServeConfig& c) {
  const auto seconds = parse_number(value, s.min, s.max);
  if (!seconds) {
    return "expected whole seconds from " + std::to_string(s.min) + " to " + std::to_string(s.max) +
           ", got " + quoted(value);
  }
  c.*M = std::chrono::seconds(*seconds);
  return {};
}
template <auto M>
std::vector<std::string> show_seconds(const ServeConfig& c) {
  return {std::to_string((c.*M).count())};
}

template <auto M>
std::string apply_count(const SettingSpec& s, const std::string& value, bool, ServeConfig& c) {
  const auto n = parse_number(value, s.min, s.max);
  if (!n) {
    return "expected a number from " + std::to_string(s.min) +
           (s.zero_means.empty() ? "" : " (" + std::string(s.zero_means) + ")") + " to " +
           std::to_string(s.max) + ", got " + quoted(value);
  }
  c.*M = static_cast<std::remove_reference_t<decltype(c.*M)>>(*n);
  return {};
}
template <auto M>
std::vector<std::string> show_count(const ServeConfig& c) {
  return {std::to_string(c.*M)};
}

template <auto M>
std::string apply_bool(const SettingSpec&, const std::string& value, bool, ServeConfig& c) {
  if (value != "true" && value != "false") {
    return "expected true or false, got " + quoted(value);
  }
  c.*M = value == "true";
  return {};
}
template <auto M>
std::vector<std::string> show_bool(const ServeConfig& c) {
  return {c.*M ? "true" : "false"};
}

template <auto M>
std::string apply_listen_optional(const SettingSpec&, const std::string& value, bool,
                                  ServeConfig& c) {
  std::string why;
  const auto addr = parse_listen(value, why);
  if (!addr) {
    return why;
  }
  c.*M = *addr;
  return {};
}
template <auto M>
std::vector<std::string> show_listen_optional(const ServeConfig& c) {
  return c.*M ? std::vector<std::string>{format_listen_addr(*(c.*M))} : std::vector<std::string>{};
}

template <auto M>
std::string apply_etcd(const SettingSpec&, const std::string& value, bool, ServeConfig& c) {
  std::string why;
  if (cluster::parse_etcd_endpoints(value, why).empty()) {
    return why;
  }
  c.*M = value;
  return {};
}

template <auto M>
std::string apply_node_id(const SettingSpec&, const std::string& value, bool, ServeConfig& c) {
  if (!cluster::valid_node_id(value)) {
    return "expected a DNS name of at most 64 characters (letters, digits, '-', labels joined "
           "by '.'; it goes in the relay certificate), got " +
           quoted(value);
  }
  c.*M = value;
  return {};
}

template <auto M>
std::string apply_cidr_list(const SettingSpec&, const std::string& value, bool first,
                            ServeConfig& c) {
  const auto cidr = Cidr::parse(value);
  if (!cidr) {
    return "expected an address or CIDR (10.0.0.0/8, 2001:db8::/32), got " + quoted(value);
  }
  if (first) {
    (c.*M).clear();
  }
  (c.*M).push_back(cidr->str());
  return {};
}
template <auto M>
std::vector<std::string> show_list(const ServeConfig& c) {
  return c.*M;
}

// ---- row builders: one per value type ---------------------------------------------------

template <auto M>
constexpr SettingSpec listen_list(std::string_view key, std::string_view help) {
  return {key, ValueKind::list,       "HOST:PORT",         help, 0,
          0,   &apply_listen_list<M>, &show_listen_list<M>};
}
template <auto M>
constexpr SettingSpec cidr_list(std::string_view key, std::string_view help) {
  return {key, ValueKind::list, "CIDR", help, 0, 0, &apply_cidr_list<M>, &show_list<M>};
}
template <auto M>
constexpr SettingSpec listen_or_off(std::string_view key, std::string_view help) {
  return {key, ValueKind::string,       "HOST:PORT|off",       help, 0,
          0,   &apply_listen_or_off<M>, &show_listen_or_off<M>};
}
template <auto M>
constexpr SettingSpec text(std::string_view key, std::string_view metavar, std::string_view help) {
  return {key, ValueKind::string, metavar, help, 0, 0, &apply_text<M>, &show_text<M>};
}
template <auto M>
constexpr SettingSpec word(std::string_view key, std::string_view metavar,
                           std::span<const std::string_view> choices, std::string_view help) {
  SettingSpec s = text<M>(key, metavar, help);
  s.choices = choices;
  return s;
}
template <auto M>
constexpr SettingSpec domain(std::string_view key, std::string_view help) {
  return {key, ValueKind::string, "NAME", help, 0, 0, &apply_domain<M>, &show_text<M>};
}
template <auto M>
constexpr SettingSpec port(std::string_view key, std::string_view help) {
  return {key, ValueKind::integer, "N", help, 1, 65535, &apply_port<M>, &show_optional_number<M>};
}
template <auto M>
constexpr SettingSpec seconds(std::string_view key, std::uint64_t min, std::uint64_t max,
                              std::string_view help) {
  return {key, ValueKind::integer, "SECONDS", help, min, max, &apply_seconds<M>, &show_seconds<M>};
}
template <auto M>
constexpr SettingSpec count(std::string_view key, std::uint64_t min, std::uint64_t max,
                            std::string_view help) {
  return {key, ValueKind::integer, "N", help, min, max, &apply_count<M>, &show_count<M>};
}

template <auto M>
constexpr SettingSpec boolean(std::string_view key, std::string_view help) {
  return {key, ValueKind::boolean, "", help, 0, 0, &apply_bool<M>, &show_bool<M>};
}

template <auto M>
constexpr SettingSpec listen_optional(std::string_view key, std::string_view help) {
  return {key,
          ValueKind::string,
          "HOST:PORT",
          help,
          0,
          0,
          &apply_listen_optional<M>,
          &show_listen_optional<M>};
}

/// A limit against floods and runaway clients: a count from 1, listed under "limits".
template <auto M>
constexpr SettingSpec limit(std::string_view key, std::uint64_t max, std::string_view help) {
  return count<M>(key, 1, max, help).as_limit();
}

using C = ServeConfig;

// THE table. Order is --help's and --print-config's. Defaults are C's member initialisers.
const SettingSpec kSettings[] = {
    listen_list<&C::ssh_listen>("ssh_listen",
                                "SSH listener; repeatable; IPv6 as [::]:2222; port 0 picks a "
                                "free port"),
    listen_list<&C::tls_listen>("tls_listen", "public TLS listener; repeatable"),
    cidr_list<&C::trusted_proxy>("trusted_proxy",
                                 "load balancers whose connections to the TLS listener start "
                                 "with a PROXY v2 header naming the visitor; repeatable")
        .default_is("none")
        .unset_is("(no PROXY headers accepted)"),
    boolean<&C::ssh_on_tls_port>("ssh_on_tls_port",
                                 "the TLS listener also takes SSH clients (told apart by their "
                                 "first bytes; silent for 300 ms = SSH); --no-ssh-on-tls-port: "
                                 "TLS only"),
    listen_or_off<&C::admin_listen>("admin_listen", "HTTP admin API and /metrics"),
    text<&C::state_dir>("state_dir", "DIR", "host keys live here, generated on first start")
        .in(kServe | kHostkey | kKeys),
    text<&C::authorized_keys>("authorized_keys", "PATH",
                              "a file or a directory of files; re-read on change, no restart")
        .in(kServe | kKeys)
        .default_is("STATE_DIR/authorized_keys"),
    domain<&C::domain>("domain", "generated hostnames are <random>.NAME"),
    port<&C::advertise_port>("advertise_port", "port shown in tls:// URLs")
        .default_is("the TLS listener's port")
        .unset_is("(the first TLS listener's port)"),
    text<&C::event_log>("event_log", "PATH|-",
                        "connection and session events as JSON lines (\"-\" = stdout)")
        .default_is("off")
        .unset_is("(no event log)"),
    word<&C::log_level>("log_level", "LEVEL", kLogLevels, "trace|debug|info|warn|error"),
    seconds<&C::idle_timeout>("idle_timeout", 1, kMaxIdleSeconds,
                              "close tunnels idle this long in either direction"),
    seconds<&C::client_hello_timeout>("client_hello_timeout", 1, kMaxClientHelloSeconds,
                                      "time a client has to send its ClientHello"),
    seconds<&C::tls_handshake_timeout>("tls_handshake_timeout", 0, kMaxIdleSeconds,
                                       "time a client has from its ClientHello to its first "
                                       "application data; until then its records are checked")
        .zero_is("off: no deadline, no record checks"),
    seconds<&C::login_grace>("login_grace", 1, kMaxLoginGraceSeconds,
                             "time an SSH client has to authenticate"),
    count<&C::threads>("threads", 0, kMaxThreads, "I/O threads")
        .zero_is("one per core")
        .default_is("0 = one per core"),
    text<&C::admin_token>("admin_token", "TOKEN",
                          "bearer token for the admin API (required for a non-loopback "
                          "--admin-listen); visible in `ps`, so prefer:")
        .as_secret(),
    text<&C::admin_token_file>("admin_token_file", "FILE",
                               "the token is this file's first line (or set "
                               "SNIGATE_ADMIN_TOKEN)"),
    seconds<&C::drain_timeout>("drain_timeout", 0, kMaxIdleSeconds,
                               "on SIGTERM/SIGINT, how long open connections may finish (a "
                               "second signal stops at once)"),
    limit<&C::max_connections_per_endpoint>("max_connections_per_endpoint", kMaxPublicLimit,
                                            "open connections one endpoint (one session's "
                                            "forward) may have"),
    limit<&C::max_pending_hellos>("max_pending_hellos", kMaxPublicLimit,
                                  "public connections still owing their ClientHello, in all"),
    limit<&C::max_pending_hellos_per_ip>("max_pending_hellos_per_ip", kMaxPublicLimit,
                                         "... from one client IP"),
    limit<&C::max_unauthenticated>("max_unauthenticated", kMaxSshLimit,
                                   "SSH connections not yet authenticated, in all"),
    limit<&C::max_unauthenticated_per_ip>("max_unauthenticated_per_ip", kMaxSshLimit,
                                          "... from one client IP"),
    limit<&C::max_sessions_per_key>("max_sessions_per_key", kMaxSshLimit,
                                    "SSH sessions one key may have at once"),
    limit<&C::max_endpoints_per_key>("max_endpoints_per_key", kMaxSshLimit,
                                     "endpoints over all of one key's sessions"),
    SettingSpec{"cluster_etcd", ValueKind::string, "http://HOST:PORT[,...]",
                "cluster mode: etcd endpoints of the shared registry (README: Running a cluster)",
                0, 0, &apply_etcd<&C::cluster_etcd>, &show_text<&C::cluster_etcd>}
        .default_is("off: a single node")
        .unset_is("(a single node)"),
    SettingSpec{"node_id", ValueKind::string, "ID",
                "this node's name in the cluster, unique (required there)", 0, 0,
                &apply_node_id<&C::node_id>, &show_text<&C::node_id>}
        .unset_is("(required with cluster_etcd)"),
    listen_optional<&C::relay_listen>("relay_listen",
                                      "cluster: where other nodes relay visitors to this one")
        .unset_is("(no relay)"),
    listen_optional<&C::relay_advertise>("relay_advertise",
                                         "cluster: the relay address other nodes dial")
        .default_is("--relay-listen")
        .unset_is("(relay_listen)"),
    text<&C::cluster_ca>("cluster_ca", "FILE", "cluster: CA of the relay's mutual TLS")
        .unset_is("(none)"),
    text<&C::cluster_cert>("cluster_cert", "FILE", "cluster: this node's relay certificate")
        .unset_is("(none)"),
    text<&C::cluster_key>("cluster_key", "FILE", "cluster: its private key").unset_is("(none)"),
    seconds<&C::cluster_lease_ttl>("cluster_lease_ttl", 1, 600,
                                   "cluster (advanced): node lease TTL; its names free this long "
                                   "after the node dies"),
};

const std::vector<std::string_view>& key_names() {
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> v;
    for (const SettingSpec& s : kSettings) {
      v.push_back(s.key);
    }
    return v;
  }();
  return names;
}

std::string_view type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date or time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

/// One value of `kind` as the text a flag would carry, or nullopt.
std::optional<std::string> scalar_text(const toml::node& node, ValueKind kind) {
  if (kind == ValueKind::integer) {
    if (const auto* i = node.as_integer()) {
      return std::to_string(i->get());
    }
    return std::nullopt;
  }
  if (kind == ValueKind::boolean) {
    if (const auto* b = node.as_boolean()) {
      return b->get() ? "true" : "false";
    }
    return std::nullopt;
  }
  if (const auto* s = node.as_string()) {
    return s->get();
  }
  return std::nullopt;
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

/// "--tls-listen" for "tls_listen".
std::string flag_of(std::string_view key) {
  std::string flag = "--" + std::string(key);
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

/// `text` wrapped at 100 columns, continuation lines indented to column `indent`.
std::string wrap(std::string_view text, std::size_t first_column, std::size_t indent) {
  constexpr std::size_t kWidth = 100;
  std::string out;
  std::size_t column = first_column;
  while (!text.empty()) {
    const std::size_t space = text.find(' ');
    const std::string_view word = text.substr(0, space);
    text.remove_prefix(space == std::string_view::npos ? text.size() : space + 1);
    if (column > indent && column + 1 + word.size() > kWidth) {
      out += "\n" + std::string(indent, ' ');
      column = indent;
    } else if (column > indent || !out.empty()) {
      out += ' ';
      ++column;
    }
    out += word;
    column += word.size();
  }
  return out;
}

SettingsResult parse_toml_settings(std::string_view text, std::string_view path) {
  SettingsResult r;
  const std::string file = printable(path, 200);
  toml::table table;
  try {
    table = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    r.error = "snigate: " + file + ":" + std::to_string(e.source().begin.line) + ":" +
              std::to_string(e.source().begin.column) +
              ": invalid TOML: " + printable(e.description(), 200);
    return r;
  }

  // toml::table is ordered by key; report and apply in the file's order instead.
  struct Entry {
    std::uint32_t line;
    std::string key;
    const toml::node* node;
  };
  std::vector<Entry> entries;
  for (const auto& [key, node] : table) {
    entries.push_back({key.source().begin.line, std::string(key.str()), &node});
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.line < b.line; });

  for (const Entry& e : entries) {
    const std::string at = file + ":" + std::to_string(e.line);
    const SettingSpec* info = find_setting(e.key);
    if (info == nullptr) {
      r.error = "snigate: " + at + ": unknown key " + "\"" + printable(e.key, 100) +
                "\" (keys are the serve options without \"--\" and with \"_\", e.g. "
                "tls_listen; see snigate --help)";
      return r;
    }
    const std::string where = at + ": " + e.key;
    Setting s{e.key, {}, where, at};
    if (info->kind == ValueKind::list && e.node->is_array()) {
      for (const toml::node& item : *e.node->as_array()) {
        const auto value = scalar_text(item, ValueKind::string);
        if (!value) {
          r.error = "snigate: " + where + ": expected an array of \"HOST:PORT\" strings, got " +
                    std::string(type_name(item)) + " in it";
          return r;
        }
        s.values.push_back(*value);
      }
      if (s.values.empty()) {
        r.error = "snigate: " + where + ": expected at least one \"HOST:PORT\"";
        return r;
      }
    } else if (auto value = scalar_text(*e.node, info->kind)) {
      s.values.push_back(std::move(*value));
    } else {
      const std::string_view want = info->kind == ValueKind::list      ? "an array of strings"
                                    : info->kind == ValueKind::integer ? "an integer"
                                    : info->kind == ValueKind::boolean ? "true or false"
                                                                       : "a string";
      r.error = "snigate: " + where + ": expected " + std::string(want) + ", got " +
                std::string(type_name(*e.node));
      return r;
    }
    r.settings.push_back(std::move(s));
  }
  return r;
}

}  // namespace

std::span<const SettingSpec> settings() { return kSettings; }

const SettingSpec* find_setting(std::string_view key) {
  const auto it = std::find_if(std::begin(kSettings), std::end(kSettings),
                               [&](const SettingSpec& s) { return s.key == key; });
  return it == std::end(kSettings) ? nullptr : &*it;
}

std::string settings_help(unsigned scope, bool limits) {
  // The limits' flags are long: their help starts further right.
  const std::size_t kHelpColumn = limits ? 36 : 32;
  const ServeConfig defaults;
  std::string out;
  for (const SettingSpec& s : kSettings) {
    if ((s.scopes & scope) == 0 || s.limit != limits) {
      continue;
    }
    std::string line = "  " + flag_of(s.key) + " " + std::string(s.metavar);
    line += line.size() + 1 < kHelpColumn ? std::string(kHelpColumn - line.size(), ' ')
                                          : "\n" + std::string(kHelpColumn, ' ');
    std::string help(s.help);
    std::string shown(s.default_help);
    if (shown.empty() && !s.secret) {
      for (const auto& v : s.show(defaults)) {
        shown += (shown.empty() ? "" : ",") + v;
      }
    }
    if (!shown.empty()) {
      help += " (default " + shown + ")";
    }
    out += line + wrap(help, kHelpColumn, kHelpColumn) + "\n";
  }
  return out;
}

std::span<const std::string_view> config_keys() { return key_names(); }

bool is_config_key(std::string_view key) { return find_setting(key) != nullptr; }

std::string env_name(std::string_view key) {
  std::string name = "SNIGATE_";
  for (const char c : key) {
    name += (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
  }
  return name;
}

std::optional<ListenAddr> parse_listen_addr(std::string_view text) {
  std::string why;
  return parse_listen(text, why);
}

std::string format_listen_addr(const ListenAddr& addr) {
  const bool v6 = addr.host.find(':') != std::string::npos;
  return (v6 ? "[" + addr.host + "]" : addr.host) + ":" + std::to_string(addr.port);
}

SettingsResult parse_config_toml(std::string_view text, std::string_view path) {
  SettingsResult r = parse_toml_settings(text, path);
  if (!r.error.empty()) {
    r.settings.clear();  // all or nothing
  }
  return r;
}

SettingsResult settings_from_environment(const Environment& env) {
  SettingsResult r;
  for (const SettingSpec& info : kSettings) {
    const std::string name = env_name(info.key);
    const auto it = env.find(name);
    if (it == env.end() || it->second.empty()) {
      continue;
    }
    Setting s{std::string(info.key), {}, name, "env " + name};
    if (info.kind != ValueKind::list) {
      s.values.push_back(it->second);
    } else {
      std::string_view rest = it->second;
      for (;;) {
        const std::size_t comma = rest.find(',');
        std::string_view item = rest.substr(0, comma);
        while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) {
          item.remove_prefix(1);
        }
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) {
          item.remove_suffix(1);
        }
        if (item.empty()) {
          r.settings.clear();  // all or nothing
          r.error = "snigate: " + name + ": empty item in \"" + printable(it->second, 100) +
                    "\" (expected HOST:PORT[,HOST:PORT...])";
          return r;
        }
        s.values.emplace_back(item);
        if (comma == std::string_view::npos) {
          break;
        }
        rest.remove_prefix(comma + 1);
      }
    }
    r.settings.push_back(std::move(s));
  }
  return r;
}

std::string to_toml(const ServeConfig& c, const std::map<std::string, std::string>* origins) {
  std::string out =
      "# snigate serve: effective configuration (flag > environment > file > default).\n"
      "# Reads back with: snigate serve --config FILE\n";
  for (const SettingSpec& s : kSettings) {
    const std::vector<std::string> values = s.show(c);
    const std::string key(s.key);
    if (s.secret || values.empty()) {
      out += "# " + key + ": " + (values.empty() ? "unset" : "set, not shown") +
             (values.empty() && !s.unset_note.empty() ? " " + std::string(s.unset_note) : "") +
             "\n";
      continue;
    }
    std::string value;
    if (s.kind == ValueKind::list) {
      for (const auto& v : values) {
        value += (value.empty() ? "[" : ", ") + toml_string(v);
      }
      value += "]";
    } else {
      const bool bare = s.kind == ValueKind::integer || s.kind == ValueKind::boolean;
      value = bare ? values.front() : toml_string(values.front());
    }
    out += key + " = " + value;
    if (origins != nullptr) {
      if (const auto it = origins->find(key); it != origins->end()) {
        out += "  # " + printable(it->second, 200);
      }
    }
    out += '\n';
  }
  return out;
}

std::optional<std::string> read_text_file(const std::string& path, std::string& error) {
  const std::unique_ptr<std::FILE, CFree<&::fclose>> f(std::fopen(path.c_str(), "rb"));
  if (!f) {
    error = std::strerror(errno);
    return std::nullopt;
  }
  std::string text;
  char buf[8192];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
    text.append(buf, n);
    if (text.size() > kMaxConfigBytes) {
      error = "larger than 1 MiB";
      return std::nullopt;
    }
  }
  if (std::ferror(f.get())) {
    error = std::strerror(errno);
    return std::nullopt;
  }
  return text;
}

Environment process_environment() {
  Environment env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::size_t eq = entry.find('=');
    if (entry.starts_with("SNIGATE_") && eq != std::string_view::npos) {
      env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
    }
  }
  return env;
}

}  // namespace gw::app

// Command-line parsing for snigate and the layering of flags over the environment over the
// config file; see cli.hpp. Every setting is a row of the table in config.cpp, and every layer
// goes through the row's own check, so a value means the same as a flag, in SNIGATE_* or in
// the file. What is here is argv syntax and the order of the layers.
#include "app/cli.hpp"

#include <algorithm>

#include "app/config.hpp"
#include "common/printable.hpp"

namespace gw::app {
namespace {

std::string quoted(std::string_view s) { return "\"" + printable(s, 100) + "\""; }

std::string option_error(std::string_view option, std::string_view what) {
  return "snigate: " + std::string(option) + ": " + std::string(what);
}

/// The config key of a flag: "--tls-listen" -> "tls_listen".
std::string key_of(std::string_view flag) {
  std::string key(flag.substr(2));
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

bool known_option(std::string_view name, unsigned scope) {
  if (name == "--help" || name == "--config") {
    return true;
  }
  if (name == "--print-config") {
    return scope == kServe;
  }
  const SettingSpec* s = name.starts_with("--") ? find_setting(key_of(name)) : nullptr;
  return s != nullptr && (s->scopes & scope) != 0;
}

/// The row of a boolean flag ("--ssh-on-tls-port") allowed in `scope`, or nullptr.
const SettingSpec* boolean_setting(std::string_view name, unsigned scope) {
  const SettingSpec* s = name.starts_with("--") ? find_setting(key_of(name)) : nullptr;
  return s != nullptr && s->kind == ValueKind::boolean && (s->scopes & scope) != 0 ? s : nullptr;
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
      const SettingSpec* spec = find_setting(s.key);  // every layer gives table keys only
      std::string why = spec->apply(*spec, value, !was_seen, r.config);
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

/// Cluster options make sense only together: one line naming the option and what to add.
std::string check_cluster(const ParseResult& r) {
  static constexpr std::string_view kClusterKeys[] = {
      "node_id",      "relay_listen", "relay_advertise",  "cluster_ca",
      "cluster_cert", "cluster_key",  "cluster_lease_ttl"};
  const ServeConfig& c = r.config;
  // By value, not by origin: --print-config writes the defaults back as plain lines.
  static const ServeConfig defaults;
  const auto given = [&](std::string_view key) {
    const SettingSpec* spec = find_setting(key);
    return spec != nullptr && spec->show(c) != spec->show(defaults);
  };
  const auto flag = [](std::string_view key) {
    std::string f = "--" + std::string(key);
    std::replace(f.begin(), f.end(), '_', '-');
    return f;
  };
  if (c.cluster_etcd.empty()) {
    for (const std::string_view key : kClusterKeys) {
      if (given(key)) {
        return "snigate: " + flag(key) +
               " is a cluster option: add --cluster-etcd http://HOST:PORT (cluster mode), or "
               "drop it";
      }
    }
    return {};
  }
  if (c.node_id.empty()) {
    return "snigate: --cluster-etcd needs --node-id ID (a name unique to this node, e.g. its "
           "host name)";
  }
  if (c.relay_advertise && !c.relay_listen) {
    return "snigate: --relay-advertise needs --relay-listen HOST:PORT (the address it "
           "advertises is where this node listens)";
  }
  const bool any_tls = !c.cluster_ca.empty() || !c.cluster_cert.empty() || !c.cluster_key.empty();
  if (c.relay_listen &&
      !(!c.cluster_ca.empty() && !c.cluster_cert.empty() && !c.cluster_key.empty())) {
    return "snigate: --relay-listen needs --cluster-ca, --cluster-cert and --cluster-key (the "
           "relay is mutual TLS under the cluster CA)";
  }
  if (c.relay_listen && !c.relay_advertise &&
      (c.relay_listen->host == "0.0.0.0" || c.relay_listen->host == "::")) {
    return "snigate: --relay-listen " + format_listen_addr(*c.relay_listen) +
           " listens on every address: add --relay-advertise HOST:PORT (the address other "
           "nodes dial)";
  }
  if (any_tls && !c.relay_listen) {
    return "snigate: --cluster-ca/--cluster-cert/--cluster-key need --relay-listen HOST:PORT";
  }
  return {};
}

/// Parses the options after a subcommand into `r.config`: flags first for their syntax, then
/// the layers from the bottom up (file, environment, flags), each value checked as it lands.
ParseResult parse_options(const std::vector<std::string>& args, std::size_t first, Command command,
                          unsigned scope, const Environment& env, const FileReader& read_file) {
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
      return fail("snigate: " + args[first - 1] + ": unexpected argument " + quoted(arg) +
                  " (see snigate --help)");
    }
    const std::size_t eq = arg.find('=');
    std::string name = arg.substr(0, eq);
    // A boolean: `--x` alone is true, `--no-x` false (and `--x=false` through the table).
    const SettingSpec* boolean = boolean_setting(name, scope);
    if (boolean == nullptr && name.starts_with("--no-")) {
      if (boolean_setting("--" + name.substr(5), scope) != nullptr) {
        if (eq != std::string::npos) {
          return fail(option_error(name, "takes no value"));
        }
        flags.push_back({key_of("--" + name.substr(5)), {"false"}, name, "flag"});
        continue;
      }
    }
    if (boolean != nullptr && eq == std::string::npos) {
      flags.push_back({key_of(name), {"true"}, name, "flag"});
      continue;
    }
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

  // Only serve runs a node: `keys` and `hostkey` beside a cluster node (`podman exec node1
  // snigate keys add ...`) see its SNIGATE_CLUSTER_* variables without its --node-id flags.
  if (std::string error = command == Command::serve ? check_cluster(r) : std::string();
      !error.empty()) {
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
    return parse_options(args, 2, Command::serve, kServe, env, read_file);
  }
  if (command == "hostkey") {
    return parse_options(args, 2, Command::hostkey, kHostkey, env, read_file);
  }
  if (command == "keys") {
    return parse_options(args, 2, Command::keys, kKeys, env, read_file);
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

std::string usage_text() {
  // The option lines come from the settings table (config.cpp), so --help, the parser and
  // --print-config agree on every name, range and default.
  return R"(usage: snigate serve [--config FILE] [--print-config] [options]
       snigate hostkey [--state-dir DIR] [--config FILE]
       snigate keys add|edit|list|remove ... [--state-dir DIR] [--authorized-keys PATH]
       snigate --version | --help

Route public TLS connections by SNI to tunnels opened with `ssh -R NAME:443:HOST:PORT`.

serve options (--opt VALUE or --opt=VALUE):
  --config FILE                 read settings from this TOML file (or SNIGATE_CONFIG)
  --print-config                print the effective configuration as TOML and exit
)" + settings_help(kServe, false) +
         "\nlimits (each refused with a message or a TLS alert; see docs/security.md):\n" +
         settings_help(kServe, true) + R"(
Every option is also a key of the --config file, without "--" and with "_" for "-"
(tls_listen = ["0.0.0.0:8443"], idle_timeout = 300, admin_listen = "off"), and an environment
variable SNIGATE_<KEY> (SNIGATE_TLS_LISTEN=0.0.0.0:8443,[::]:8443: lists comma-separated; an
empty variable counts as unset). Precedence: flag > environment > file > default.
`hostkey` and `keys` read the same settings (state_dir, authorized_keys) from the same places.

hostkey: print the host key's fingerprint and public line (for users' known_hosts); it never
creates one: with no key in STATE_DIR it says where it looked and exits 1.

keys (see snigate keys --help):
  snigate keys add [--name N] [--allow PATTERN]... [--from PATTERN]... [--expires DATE] PUBKEY
  snigate keys edit [--name N] [--allow PATTERN]... [--from PATTERN]... [--expires DATE] KEY
                    (changes a key's options; its live sessions keep the names still allowed)
  snigate keys list [--json]
  snigate keys remove FINGERPRINT|NAME
  --expires YYYY-MM-DD lasts to the end of that day (23:59:59 UTC); YYYYMMDDHHMM is exact.

Bad options are refused with one line naming the option; the exit status is then 2.
)";
}

}  // namespace gw::app

// The layers under the command line (DESIGN section 2): the TOML config file (--config FILE)
// and SNIGATE_* environment variables, both turned into Settings in the flags' own terms, so
// cli.cpp checks every value with the same code whatever its source; and the printer behind
// `snigate serve --print-config`. Pure except read_text_file() and process_environment(),
// which main passes in. Deliberately not here: value checks (cli.cpp's apply_setting), tables
// or includes in the file (one flat list of keys), reloading the file (start-up only).
#pragma once

#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "app/cli.hpp"

namespace gw::app {

/// One setting from the file or the environment, still unchecked.
struct Setting {
  std::string key;                  ///< config key: "tls_listen"
  std::vector<std::string> values;  ///< one value; a list key may have several
  std::string
      where;  ///< prefixes errors: "FILE:LINE: tls_listen", "SNIGATE_TLS_LISTEN", "--tls-listen"
  std::string origin;  ///< for ParseResult::origins: "FILE:LINE", "env SNIGATE_TLS_LISTEN", "flag"
};

struct SettingsResult {
  std::vector<Setting> settings;
  std::string error;  ///< empty on success, else one line starting "snigate: "
};

/// The config keys, in --help order: each serve option without "--" and with "_" for "-".
std::span<const std::string_view> config_keys();
bool is_config_key(std::string_view key);
/// "tls_listen" -> "SNIGATE_TLS_LISTEN".
std::string env_name(std::string_view key);

/// Parses a config file's text (`path` only names it in errors and origins). Top-level keys
/// only; lists (ssh_listen, tls_listen) as arrays of strings or one string; numbers as TOML
/// integers; the rest as strings. Refuses, naming `path:line` and the key: invalid TOML,
/// unknown keys, tables, wrong types, empty lists (then `settings` is empty).
SettingsResult parse_config_toml(std::string_view text, std::string_view path);

/// The SNIGATE_<KEY> variables of `env` (others, and empty values, are ignored); list keys
/// split at commas, spaces around items trimmed. Refuses empty list items.
SettingsResult settings_from_environment(const Environment& env);

/// The configuration as a TOML file that parse_config_toml() reads back to the same config;
/// with `origins` (ParseResult::origins), each line says where its value came from. Unset
/// optional settings are commented out; the admin token is never printed.
std::string to_toml(const ServeConfig& config,
                    const std::map<std::string, std::string>* origins = nullptr);

/// A FileReader over the real file system (whole file, at most 1 MiB).
std::optional<std::string> read_text_file(const std::string& path, std::string& error);

/// The process environment's SNIGATE_* variables.
Environment process_environment();

}  // namespace gw::app

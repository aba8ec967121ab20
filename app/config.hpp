// The settings table and the layers under the command line (DESIGN section 2). Every setting
// of `snigate serve` (and the few `hostkey` and `keys` take) is one row of settings(): its key,
// how the TOML file spells it, the flag's metavariable and --help line, its range, and the
// functions that check a value into ServeConfig and show it back. Flags (cli.cpp), SNIGATE_*
// variables, the TOML file, --help, --print-config and ParseResult::origins all read that one
// table, so adding an option is adding a row (and a ServeConfig member, whose initialiser is
// the default). Pure except read_text_file() and process_environment(), which main passes in.
// Deliberately not here: tables or includes in the file (one flat list of keys), reloading the
// file (start-up only), and argv syntax (cli.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "app/cli.hpp"

namespace gw::app {

/// Which subcommands take a setting as a flag. Every subcommand reads every setting from the
/// file and the environment (so a bad SNIGATE_* value is refused by `hostkey` too); the scope
/// only limits the command line, where a serve-only flag on `hostkey` is a mistake.
enum Scope : unsigned { kServe = 1, kHostkey = 2, kKeys = 4 };

/// How a setting is spelled in the TOML file (and split in the environment: lists at commas).
/// A boolean's flag takes no value (`--x` is true, `--no-x` or `--x=false` false).
enum class ValueKind { list, integer, string, boolean };

/// One row of the settings table.
struct SettingSpec {
  std::string_view key;      ///< config key "tls_listen"; flag --tls-listen; SNIGATE_TLS_LISTEN
  ValueKind kind;            ///< TOML type
  std::string_view metavar;  ///< --help: "HOST:PORT", "SECONDS", "N"
  std::string_view help;     ///< --help text; "(default X)" is added from ServeConfig{}
  std::uint64_t min = 0;     ///< numbers: the range a value may take
  std::uint64_t max = 0;
  /// Checks one value and stores it; returns what is wrong (without where it came from), or
  /// "". `first_in_layer`: a list setting drops what lower layers gave.
  std::string (*apply)(const SettingSpec&, const std::string& value, bool first_in_layer,
                       ServeConfig&) = nullptr;
  /// The current value(s) as a flag would carry them; empty when unset.
  std::vector<std::string> (*show)(const ServeConfig&) = nullptr;
  unsigned scopes = kServe;
  bool limit = false;                  ///< listed under "limits" in --help
  bool secret = false;                 ///< never printed (--print-config says "set, not shown")
  std::string_view default_help = {};  ///< --help's default, when not the value itself
  std::string_view unset_note = {};    ///< --print-config's comment for an unset value
  std::string_view zero_means = {};    ///< numbers: what 0 means ("one per core")
  std::span<const std::string_view> choices = {};  ///< a word from this list

  // Modifiers for the table's rows: a copy with one field changed.
  template <class T>
  constexpr SettingSpec with(T SettingSpec::*field, T value) const {
    SettingSpec r = *this;
    r.*field = value;
    return r;
  }
  constexpr SettingSpec in(unsigned s) const { return with(&SettingSpec::scopes, s); }
  constexpr SettingSpec as_limit() const { return with(&SettingSpec::limit, true); }
  constexpr SettingSpec as_secret() const { return with(&SettingSpec::secret, true); }
  constexpr SettingSpec default_is(std::string_view t) const {
    return with(&SettingSpec::default_help, t);
  }
  constexpr SettingSpec zero_is(std::string_view t) const {
    return with(&SettingSpec::zero_means, t);
  }
  constexpr SettingSpec unset_is(std::string_view t) const {
    return with(&SettingSpec::unset_note, t);
  }
};

/// Every setting, in --help order (--config and --print-config are not settings).
std::span<const SettingSpec> settings();
/// The row of `key` ("tls_listen"), or nullptr.
const SettingSpec* find_setting(std::string_view key);

/// The --help lines of the settings in `scope` (limits after the others when `limits`).
std::string settings_help(unsigned scope, bool limits);

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

// The config file and environment layers, and --print-config; see config.hpp. toml++ does the
// TOML grammar (Debian's libtomlplusplus, compiled mode); this file only maps its tree onto
// the flags' keys and refuses what the flags could not express.
#include "app/config.hpp"

#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "common/printable.hpp"
#include "common/unique_handle.hpp"

namespace gw::app {
namespace {

// A config file is a screenful of keys; anything this large is the wrong file.
constexpr std::size_t kMaxConfigBytes = 1024 * 1024;

/// How a key's value is spelled in TOML.
enum class Kind { list, integer, string };

struct KeyInfo {
  std::string_view key;
  Kind kind;
};

// --help order; --config and --print-config are not settings.
constexpr std::array<KeyInfo, 16> kOwnKeys = {{
    {"ssh_listen", Kind::list},
    {"tls_listen", Kind::list},
    {"admin_listen", Kind::string},
    {"state_dir", Kind::string},
    {"authorized_keys", Kind::string},
    {"domain", Kind::string},
    {"advertise_port", Kind::integer},
    {"event_log", Kind::string},
    {"log_level", Kind::string},
    {"idle_timeout", Kind::integer},
    {"client_hello_timeout", Kind::integer},
    {"login_grace", Kind::integer},
    {"threads", Kind::integer},
    {"admin_token", Kind::string},
    {"admin_token_file", Kind::string},
    {"drain_timeout", Kind::integer},
}};

// Then every limit (kLimits in cli.hpp, where they are listed once), each an integer.
constexpr auto kKeys = [] {
  std::array<KeyInfo, kOwnKeys.size() + std::size(kLimits)> all{};
  std::size_t i = 0;
  for (const KeyInfo& k : kOwnKeys) {
    all[i++] = k;
  }
  for (const LimitInfo& l : kLimits) {
    all[i++] = {l.key, Kind::integer};
  }
  return all;
}();

constexpr std::array<std::string_view, kKeys.size()> kKeyNames = [] {
  std::array<std::string_view, kKeys.size()> names{};
  for (std::size_t i = 0; i < kKeys.size(); ++i) {
    names[i] = kKeys[i].key;
  }
  return names;
}();

const KeyInfo* find_key(std::string_view key) {
  const auto it =
      std::find_if(kKeys.begin(), kKeys.end(), [&](const KeyInfo& k) { return k.key == key; });
  return it == kKeys.end() ? nullptr : &*it;
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
std::optional<std::string> scalar_text(const toml::node& node, Kind kind) {
  if (kind == Kind::integer) {
    if (const auto* i = node.as_integer()) {
      return std::to_string(i->get());
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

}  // namespace

std::span<const std::string_view> config_keys() { return kKeyNames; }

bool is_config_key(std::string_view key) { return find_key(key) != nullptr; }

std::string env_name(std::string_view key) {
  std::string name = "SNIGATE_";
  for (const char c : key) {
    name += (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
  }
  return name;
}

namespace {

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
    const KeyInfo* info = find_key(e.key);
    if (info == nullptr) {
      r.error = "snigate: " + at + ": unknown key " + "\"" + printable(e.key, 100) +
                "\" (keys are the serve options without \"--\" and with \"_\", e.g. "
                "tls_listen; see snigate --help)";
      return r;
    }
    const std::string where = at + ": " + e.key;
    Setting s{e.key, {}, where, at};
    if (info->kind == Kind::list && e.node->is_array()) {
      for (const toml::node& item : *e.node->as_array()) {
        const auto value = scalar_text(item, Kind::string);
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
      const std::string_view want = info->kind == Kind::list      ? "an array of strings"
                                    : info->kind == Kind::integer ? "an integer"
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

SettingsResult parse_config_toml(std::string_view text, std::string_view path) {
  SettingsResult r = parse_toml_settings(text, path);
  if (!r.error.empty()) {
    r.settings.clear();  // all or nothing
  }
  return r;
}

SettingsResult settings_from_environment(const Environment& env) {
  SettingsResult r;
  for (const KeyInfo& info : kKeys) {
    const std::string name = env_name(info.key);
    const auto it = env.find(name);
    if (it == env.end() || it->second.empty()) {
      continue;
    }
    Setting s{std::string(info.key), {}, name, "env " + name};
    if (info.kind != Kind::list) {
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
  auto line = [&](std::string_view key, const std::string& text) {
    out += text;
    if (origins != nullptr && !text.starts_with('#')) {
      if (const auto it = origins->find(std::string(key)); it != origins->end()) {
        out += "  # " + printable(it->second, 200);
      }
    }
    out += '\n';
  };
  auto set = [&](std::string_view key, const std::string& value) {
    line(key, std::string(key) + " = " + value);
  };
  auto list = [&](const std::vector<ListenAddr>& addrs) {
    std::string v = "[";
    for (const auto& a : addrs) {
      v += (v.size() > 1 ? ", " : "") + toml_string(format_listen_addr(a));
    }
    return v + "]";
  };
  set("ssh_listen", list(c.ssh_listen));
  set("tls_listen", list(c.tls_listen));
  set("admin_listen", toml_string(c.admin_listen ? format_listen_addr(*c.admin_listen) : "off"));
  set("state_dir", toml_string(c.state_dir));
  set("authorized_keys", toml_string(c.authorized_keys));
  set("domain", toml_string(c.domain));
  if (c.advertise_port) {
    set("advertise_port", std::to_string(*c.advertise_port));
  } else {
    line("advertise_port", "# advertise_port: unset (the first TLS listener's port)");
  }
  if (!c.event_log.empty()) {
    set("event_log", toml_string(c.event_log));
  } else {
    line("event_log", "# event_log: unset (no event log)");
  }
  set("log_level", toml_string(c.log_level));
  set("idle_timeout", std::to_string(c.idle_timeout.count()));
  set("client_hello_timeout", std::to_string(c.client_hello_timeout.count()));
  set("login_grace", std::to_string(c.login_grace.count()));
  set("threads", std::to_string(c.threads));
  if (!c.admin_token.empty()) {
    line("admin_token", "# admin_token: set, not shown");
  } else {
    line("admin_token", "# admin_token: unset");
  }
  if (!c.admin_token_file.empty()) {
    set("admin_token_file", toml_string(c.admin_token_file));
  } else {
    line("admin_token_file", "# admin_token_file: unset");
  }
  set("drain_timeout", std::to_string(c.drain_timeout.count()));
  for (const LimitInfo& l : kLimits) {
    set(l.key, std::to_string(c.*l.field));
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

// `snigate keys add|edit|list|remove`; see keys_command.hpp. Validation is the gateway's own
// parser (keys/authorized_keys) run on each option alone, for a message naming the flag, and on
// the finished line; --allow host patterns are also held against the rules of requested names
// (tunnel::Hostname), so a pattern no `ssh -R` could ever match is refused now rather than
// silently useless. Listing is the gateway's own loader (keys/key_store), so `list` shows
// exactly the keys the gateway honours and warns about the lines it skips. `edit` rewrites one
// key's line in place: the gateway's reload keeps the sessions of a key whose blob is
// unchanged, so they go on serving while their names are still allowed.
#include "app/keys_command.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include "app/config.hpp"
#include "app/json.hpp"
#include "common/ascii.hpp"
#include "common/printable.hpp"
#include "keys/authorized_keys.hpp"
#include "keys/key_store.hpp"
#include "tunnel/hostname.hpp"

namespace gw::app {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    "usage: snigate keys add [--name N] [--allow PATTERN[:PORT]]... [--from PATTERN]...\n"
    "                        [--expires DATE] [WHERE] PUBKEY_FILE|-\n"
    "       snigate keys edit [--name N] [--allow PATTERN[:PORT]]... [--from PATTERN]...\n"
    "                         [--expires DATE|never] [WHERE] FINGERPRINT|NAME\n"
    "       snigate keys list [--json] [WHERE]\n"
    "       snigate keys remove [--all] [WHERE] FINGERPRINT|NAME\n"
    "WHERE is --file PATH (= --authorized-keys PATH) or --state-dir DIR, and --config FILE;\n"
    "like `snigate serve`, they also come from SNIGATE_AUTHORIZED_KEYS, SNIGATE_STATE_DIR,\n"
    "SNIGATE_CONFIG and the config file (default STATE_DIR/authorized_keys). PATH may be a\n"
    "directory of key files: add writes PATH/snigate-keys, the others read every file.\n"
    "--allow: a host pattern (* ? , and ! as in OpenSSH) a requested name can match; the port\n"
    "is 443 unless given (443, * or the gateway's advertised port). A bare '*' (any name) is\n"
    "allowed with a warning.\n"
    "--expires: YYYY-MM-DD (or YYYYMMDD) is the end of that day, 23:59:59 UTC; YYYYMMDDHHMM[SS]\n"
    "is that minute (UTC). `edit --expires never` removes the expiry.\n"
    "edit: replaces the options given (--allow replaces every permitlisten, --from the from=\n"
    "list) and keeps the others; live sessions of the key keep running while their names are\n"
    "still allowed.\n";

/// The file `keys add` writes when --file names a directory.
constexpr const char* kDirFile = "snigate-keys";

struct Args {
  std::string verb;
  std::optional<std::string> file, state_dir, config, name, expires;
  std::vector<std::string> allow, from, positional;
  bool json = false, all = false;
  /// The settings flags as `--key=value`, for the shared parser (parse_args "keys").
  std::vector<std::string> settings;
};

/// One line on `err`, exit status 2.
int usage_error(const std::string& verb, const std::string& message, std::ostream& err) {
  err << "snigate: keys" << (verb.empty() ? "" : " " + verb) << ": " << message
      << " (see snigate keys --help)\n";
  return 2;
}

/// Parses `--opt value`, `--opt=value` and flags. Options belong to verbs: a flag another verb
/// uses is refused rather than ignored, and single-valued options may be given once.
std::optional<Args> parse(const std::vector<std::string>& args, int* status, std::ostream& err) {
  Args a;
  a.verb = args[0];
  // Every verb takes the settings flags (WHERE in the usage) on top of its own.
  const std::set<std::string> kWhere = {"--file", "--authorized-keys", "--state-dir", "--config"};
  const std::map<std::string, std::set<std::string>> kOptions = {
      {"add", {"--name", "--allow", "--from", "--expires"}},
      {"edit", {"--name", "--allow", "--from", "--expires"}},
      {"list", {"--json"}},
      {"remove", {"--all"}},
  };
  const auto verb_options = kOptions.find(a.verb);
  if (verb_options == kOptions.end()) {
    *status = usage_error(
        "", "unknown command " + printable(a.verb, 40) + " (expected add, edit, list or remove)",
        err);
    return std::nullopt;
  }
  for (std::size_t i = 1; i < args.size(); ++i) {
    std::string word = args[i];
    if (word == "-" || !word.starts_with("-")) {
      a.positional.push_back(word);
      continue;
    }
    if (word == "--") {
      a.positional.insert(a.positional.end(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                          args.end());
      break;
    }
    std::optional<std::string> inline_value;
    if (const auto eq = word.find('='); word.starts_with("--") && eq != std::string::npos) {
      inline_value = word.substr(eq + 1);
      word = word.substr(0, eq);
    }
    if (!verb_options->second.count(word) && !kWhere.count(word)) {
      *status = usage_error(a.verb, "unknown option " + printable(word, 40), err);
      return std::nullopt;
    }
    if (word == "--json" || word == "--all") {
      if (inline_value) {
        *status = usage_error(a.verb, word + " takes no value", err);
        return std::nullopt;
      }
      (word == "--json" ? a.json : a.all) = true;
      continue;
    }
    if (!inline_value && i + 1 >= args.size()) {
      *status = usage_error(a.verb, word + " needs a value", err);
      return std::nullopt;
    }
    std::string v = inline_value ? *inline_value : args[++i];
    if (word == "--allow" || word == "--from") {
      (word == "--allow" ? a.allow : a.from).push_back(std::move(v));
      continue;
    }
    auto& slot = word == "--file" || word == "--authorized-keys" ? a.file
                 : word == "--state-dir"                         ? a.state_dir
                 : word == "--config"                            ? a.config
                 : word == "--name"                              ? a.name
                                                                 : a.expires;
    if (slot) {
      *status = usage_error(a.verb, word + " given twice", err);
      return std::nullopt;
    }
    if (kWhere.count(word)) {
      // --file is our old spelling of serve's --authorized-keys: one setting, two names.
      a.settings.push_back((word == "--file" ? std::string("--authorized-keys") : word) + "=" + v);
    }
    slot = std::move(v);
  }
  if (a.file && a.state_dir) {
    *status = usage_error(a.verb, "give --file or --state-dir, not both", err);
    return std::nullopt;
  }
  return a;
}

/// Where keys live: a file, or a directory of files.
struct Target {
  std::string path;
  bool is_dir = false;
};

/// The settings of the verb's WHERE flags over the environment and the config file: the
/// gateway's own ParseResult, so `keys` looks where `serve` would.
struct Where {
  Target target;
  std::uint16_t advertised_port = 0;  ///< 0: not known (the TLS listener picks a free port)
};

Where where_of(const ServeConfig& c) {
  std::error_code ec;
  Where w{Target{c.authorized_keys, fs::is_directory(c.authorized_keys, ec)}};
  w.advertised_port = c.advertise_port.value_or(c.tls_listen.empty() ? 0 : c.tls_listen[0].port);
  return w;
}

/// A file's content, "" if it does not exist. Throws std::runtime_error if it exists but cannot
/// be read: rewriting an unreadable file as if it were empty would drop every key in it.
std::string read_existing(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (ec) {
      throw std::runtime_error(path + ": " + ec.message());
    }
    return {};
  }
  return keys::read_key_file(path);
}

struct KeyFile {
  std::string path;
  std::string content;
  std::vector<keys::AuthorizedKey> keys;  // every parsed line, repeats included
};

/// Every key file of the target with its parsed keys. Throws std::runtime_error or
/// std::filesystem::filesystem_error when a file or the directory cannot be read.
std::vector<KeyFile> load_files(const Target& t) {
  std::vector<KeyFile> files;
  for (const auto& f : keys::key_files(t.path)) {
    KeyFile kf{f, read_existing(f), {}};
    kf.keys = keys::parse_authorized_keys(kf.content, f).keys;
    files.push_back(std::move(kf));
  }
  return files;
}

/// Flushes a directory entry change (our rename) to disk; best effort: the data is already
/// safe in the renamed file, and some filesystems refuse fsync on directories.
void sync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

/// Replaces `requested` with `content` atomically: a reader (the gateway's watcher) sees the
/// old file or the new one, never half of either. A symlink is followed, so the link stays a
/// link. An existing file keeps its mode and, when we may set it (root), its owner: `sudo
/// snigate keys add` must not leave a root-owned 0600 file the gateway's user can't read. New
/// files are 0600 and new directories 0700 (the state directory also holds host keys).
bool write_atomically(const std::string& requested, const std::string& content, std::ostream& err) {
  std::error_code ec;
  fs::path p = requested;
  if (fs::is_symlink(p, ec)) {
    p = fs::canonical(p, ec);
    if (ec) {
      err << "snigate: keys: " << requested << " is a symlink to nothing (" << ec.message()
          << ")\n";
      return false;
    }
  }
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (!ec) {
      fs::permissions(dir, fs::perms::owner_all, ec);
    }
    if (ec) {
      err << "snigate: keys: cannot create " << dir.string() << ": " << ec.message() << "\n";
      return false;
    }
  }
  struct stat st {};
  const bool existed = ::stat(p.c_str(), &st) == 0;
  // A dotfile, so neither the gateway's directory loader nor an editor's glob picks it up.
  std::string tmp = (dir / ("." + p.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    err << "snigate: keys: cannot create a temporary file in " << dir.string() << ": "
        << std::strerror(errno) << "\n";
    return false;
  }
  bool ok = ::fchmod(fd, existed ? (st.st_mode & 07777) : 0600) == 0;
  if (ok && existed && (st.st_uid != ::geteuid() || st.st_gid != ::getegid())) {
    // Fails with EPERM unless we are root; then the file was ours to begin with or we are
    // replacing someone else's in a directory we may write: keep going, as editors do.
    (void)!::fchown(fd, st.st_uid, st.st_gid);
  }
  std::size_t done = 0;
  while (ok && done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    ok = n > 0;
    done += n > 0 ? static_cast<std::size_t>(n) : 0;
  }
  const int saved = errno;
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), p.c_str()) != 0) {
    err << "snigate: keys: cannot write " << p.string() << ": " << std::strerror(ok ? errno : saved)
        << "\n";
    ::unlink(tmp.c_str());
    return false;
  }
  sync_directory(dir);
  return true;
}

/// "" when `s` may go between the double quotes of an option; else why not. The parser
/// would accept some of these (`\"`), but a name or address never contains them, so they are
/// typos or attempts to smuggle a second option in.
std::string quoting_problem(std::string_view s) {
  for (const char c : s) {
    if (c == '"' || c == '\\' || c == ' ' || c == '\t' || static_cast<unsigned char>(c) < 0x20 ||
        c == 0x7f) {
      return "quotes, backslashes, spaces and control characters are not allowed";
    }
  }
  return {};
}

using ascii::split_commas;  // empty elements are kept (and refused by the callers)

/// Why no requested name can ever match the host pattern `element` (one list entry, without
/// its '!'), or "". Requested names are tunnel::Hostname (DESIGN section 3): a pattern with
/// an empty label, an IP address, a bad label or a trailing dot is a typo, not a rule. `?`
/// stands for one character and `*` for any run of them, so the element is tried with each
/// wildcard as one letter and with `*` as nothing: if neither is a hostname, nothing is.
std::string host_pattern_problem(std::string_view element) {
  if (element.ends_with('.')) {
    return "'" + std::string(element) +
           "' can never match: requested names have no trailing dot (drop it)";
  }
  auto spelled = [&](std::string_view star) {
    std::string name;
    for (const char c : element) {
      name += c == '*' ? std::string(star) : c == '?' ? std::string("x") : std::string(1, c);
    }
    return name;
  };
  const auto as_letter = tunnel::Hostname::parse(spelled("x"), false);
  if (as_letter || tunnel::Hostname::parse(spelled(""), false)) {
    return {};
  }
  return "'" + std::string(element) + "' can never match a requested name (" +
         as_letter.error().message() + ")";
}

/// Checks one --allow value and returns the permitlisten value for it ("host:443" unless a
/// port is given); on refusal `*why` says what is wrong. `advertised` is the gateway's
/// advertised port (0: unknown), the only port besides 443 a forward may ask for.
std::optional<std::string> permitlisten_of(const std::string& pattern, std::uint16_t advertised,
                                           std::string* why, std::vector<std::string>* warnings) {
  if (*why = quoting_problem(pattern); !why->empty()) {
    return std::nullopt;
  }
  const std::size_t colon = pattern.rfind(':');
  const std::string host = pattern.substr(0, colon);
  const std::string value = colon == std::string::npos ? pattern + ":443" : pattern;
  if (host.empty()) {
    *why = "no host pattern (e.g. app.example.com or '*.example.com')";
    return std::nullopt;
  }
  bool allows_something = false;
  for (std::string_view element : split_commas(host)) {
    const bool negated = element.starts_with('!');
    if (negated) {
      element.remove_prefix(1);
    }
    if (element.empty()) {
      *why = "empty entry in the pattern list";
      return std::nullopt;
    }
    // Requested names are LDH hostnames (tunnel::Hostname): any other character makes a
    // pattern that can never match, which is a typo the admin wants to hear about now.
    const bool ldh_or_glob = std::all_of(element.begin(), element.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '*' ||
             c == '?';
    });
    if (!ldh_or_glob) {
      *why = "'" + std::string(element) +
             "' can never match a hostname (letters, digits, '-', '.', and the wildcards * ?)";
      return std::nullopt;
    }
    if (*why = host_pattern_problem(element); !why->empty()) {
      return std::nullopt;
    }
    allows_something = allows_something || !negated;
    if (!negated && element == "*") {
      warnings->push_back("--allow " + printable(pattern, 80) +
                          ": '*' lets this key claim any name not yet taken, other users' "
                          "too; give a zone like '*.alice.example.com' unless you mean that");
    }
  }
  if (!allows_something) {
    // OpenSSH's pattern lists: a negation only takes away, so a list of them matches nothing.
    *why = "only negations: a list needs a name it allows, e.g. '*.example.com,!" +
           std::string(split_commas(host)[0].substr(1)) + "'";
    return std::nullopt;
  }
  if (const auto parsed = keys::parse_key_options("permitlisten=\"" + value + "\""); !parsed) {
    *why = parsed.error().message();
    return std::nullopt;
  }
  const std::string port = colon == std::string::npos ? "443" : pattern.substr(colon + 1);
  if (port != "*" && port != "443" && (advertised == 0 || port != std::to_string(advertised))) {
    *why = "port " + port + " never matches: forwards ask for port 443" +
           (advertised != 0 && advertised != 443
                ? " or the advertised port " + std::to_string(advertised)
                : std::string()) +
           "; leave the port out (443) or give :*";
    return std::nullopt;
  }
  return value;
}

/// Checks one --from value (a comma list); on refusal `*why` says which entry and why. Adds a
/// warning for entries that look like host names: the gateway matches addresses only.
bool from_ok(const std::string& list, std::string* why, std::vector<std::string>* warnings) {
  if (*why = quoting_problem(list); !why->empty()) {
    return false;
  }
  for (std::string_view element : split_commas(list)) {
    const std::string whole(element);
    if (element.starts_with('!')) {
      element.remove_prefix(1);
    }
    if (element.empty()) {
      *why = "empty entry in the pattern list";
      return false;
    }
    if (!keys::parse_key_options("from=\"" + whole + "\"")) {
      *why = "'" + whole +
             "' is not a network: give address/length with no bits set past the length "
             "(e.g. 203.0.113.0/24 or 2001:db8::/32)";
      return false;
    }
    const bool address_like = std::all_of(element.begin(), element.end(), [](char c) {
      return std::isxdigit(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == '/' ||
             c == '*' || c == '?';
    });
    if (!address_like) {
      warnings->push_back("--from " + printable(whole, 80) +
                          ": host names never match (the gateway compares client addresses, "
                          "without DNS); use addresses or CIDRs");
    }
  }
  return true;
}

/// "2027-06-30" and "20270630" -> "20270630235959": a date alone means the end of that day
/// (UTC), as "expires on 2027-06-30" does in words (OpenSSH would read YYYYMMDD as its first
/// second). Other text unchanged (the parser then judges it).
std::string expiry_digits(const std::string& date) {
  std::string digits = date;
  if (date.size() == 10 && date[4] == '-' && date[7] == '-') {
    digits = date.substr(0, 4) + date.substr(5, 2) + date.substr(8, 2);
  }
  const bool date_only =
      digits.size() == 8 &&
      std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
  return date_only ? digits + "235959" : digits;
}

std::string listen_text(const keys::PermitListen& p) {
  return p.host_pattern + ":" + (p.port ? std::to_string(*p.port) : std::string("*"));
}

std::string allowed_names(const keys::KeyOptions& o) {
  if (!o.port_forwarding) {
    return "(may not forward)";
  }
  if (o.permit_listen.empty()) {
    return "(names under --domain)";
  }
  std::string s;
  for (const auto& p : o.permit_listen) {
    s += (s.empty() ? "" : ",") + listen_text(p);
  }
  return s;
}

/// permitopen entries (internal endpoints the key may reach), for `keys list`.
std::string open_text(const keys::KeyOptions& o) {
  std::string s;
  for (const auto& p : o.permit_open) {
    s += (s.empty() ? "" : ",") + listen_text(p);
  }
  return s;
}

std::string expiry_text(const keys::KeyOptions& o) {
  if (!o.expiry_unix) {
    return "-";
  }
  const auto t = static_cast<std::time_t>(*o.expiry_unix);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string trim(std::string_view s) { return std::string(gw::ascii::trim(s)); }

/// The one public key line of a .pub file (blank and `#` lines ignored); nullopt with a
/// message on `err` when there is none, several, or a private key.
std::optional<std::string> public_key_line(const std::string& text, const std::string& source,
                                           std::ostream& err) {
  if (text.find("PRIVATE KEY-----") != std::string::npos) {
    err << "snigate: keys add: " << source << " is a private key; give the public one ("
        << (source == "-" ? "the .pub file" : source + ".pub") << ")\n";
    return std::nullopt;
  }
  std::vector<std::string> lines;
  std::string_view rest = text;
  while (!rest.empty()) {
    const std::size_t nl = rest.find('\n');
    const std::string line = trim(rest.substr(0, nl));
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    if (!line.empty() && line.front() != '#') {
      lines.push_back(line);
    }
  }
  if (lines.size() != 1) {
    err << "snigate: keys add: " << source
        << (lines.empty() ? ": no public key in it\n"
                          : " holds " + std::to_string(lines.size()) +
                                " lines; give one public key at a time\n");
    return std::nullopt;
  }
  return lines[0];
}

/// The authorized_keys options for the --allow, --from and --expires of `a` (only those
/// given), checked one by one for a message naming the flag. Returns 0, or the exit status
/// after one line on `err`.
int options_of(const Args& a, const std::string& verb, std::uint16_t advertised,
               std::vector<std::string>* options, std::vector<std::string>* warnings,
               std::ostream& err) {
  for (const auto& pattern : a.allow) {
    std::string why;
    const auto value = permitlisten_of(pattern, advertised, &why, warnings);
    if (!value) {
      err << "snigate: keys " << verb << ": --allow " << printable(pattern, 80) << ": " << why
          << "\n";
      return 1;
    }
    options->push_back("permitlisten=\"" + *value + "\"");
  }
  if (!a.from.empty()) {
    std::string joined;
    for (const auto& f : a.from) {
      if (std::string why; !from_ok(f, &why, warnings)) {
        err << "snigate: keys " << verb << ": --from " << printable(f, 80) << ": " << why << "\n";
        return 1;
      }
      joined += (joined.empty() ? "" : ",") + f;
    }
    options->push_back("from=\"" + joined + "\"");
  }
  if (a.expires && *a.expires != "never") {
    const std::string option = "expiry-time=\"" + expiry_digits(*a.expires) + "\"";
    const auto parsed = keys::parse_key_options(option);
    if (!parsed || quoting_problem(*a.expires) != "") {
      return usage_error(verb,
                         "--expires " + printable(*a.expires, 40) +
                             ": expected a date YYYY-MM-DD (UTC), or YYYYMMDD[HHMM[SS]]",
                         err);
    }
    if (*parsed->expiry_unix <= static_cast<std::int64_t>(std::time(nullptr))) {
      warnings->push_back("--expires " + *a.expires + " is in the past: the key is refused");
    }
    options->push_back(option);
  }
  return 0;
}

/// A key's display name as written after the blob: control characters become spaces.
std::string display_name(std::string name) {
  std::replace_if(
      name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; }, ' ');
  return trim(name);
}

/// The authorized_keys line for `key` with `options` and `name`, read back through the
/// gateway's parser: nullopt (and one line on `err`) unless it means what we meant.
std::optional<keys::AuthorizedKey> checked_line(const std::vector<std::string>& options,
                                                const keys::AuthorizedKey& key,
                                                const std::string& name, std::size_t allows,
                                                const std::string& verb, std::string* line,
                                                std::ostream& err) {
  line->clear();
  for (const auto& o : options) {
    *line += (line->empty() ? "" : ",") + o;
  }
  *line += (line->empty() ? "" : " ") + key.type + " " + key.blob_base64;
  if (!name.empty()) {
    *line += " " + name;
  }
  auto check = keys::parse_authorized_key_line(*line);
  if (!check || check->options.permit_listen.size() != allows || check->comment != name ||
      check->fingerprint != key.fingerprint) {
    err << "snigate: keys " << verb << ": the line would not read back as given ("
        << (check ? "options differ" : check.error().message()) << "): " << printable(*line, 200)
        << "\n";
    return std::nullopt;
  }
  return std::move(*check);
}

void print_warnings(const std::string& verb, const std::vector<std::string>& warnings,
                    std::ostream& err) {
  for (const auto& w : warnings) {
    err << "snigate: keys " << verb << ": warning: " << w << "\n";
  }
}

int add(const Args& a, const Where& where, std::istream& in, std::ostream& out, std::ostream& err) {
  if (a.positional.size() != 1) {
    return usage_error("add", "give one public key file (or - for standard input)", err);
  }
  const std::string source = a.positional[0];
  std::string text;
  if (source == "-") {
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    std::error_code ec;
    if (!fs::exists(source, ec)) {
      err << "snigate: keys add: " << source << ": no such file\n";
      return 1;
    }
    if (fs::is_directory(source, ec)) {
      err << "snigate: keys add: " << source << " is a directory; give the .pub file\n";
      return 1;
    }
    // Read as a stream, not only a regular file: `keys add <(cat k.pub)` is a pipe.
    std::string why;
    const auto read = read_text_file(source, why);
    if (!read) {
      err << "snigate: keys add: " << source << ": " << why << "\n";
      return 1;
    }
    text = *read;
  }
  const auto line_in = public_key_line(text, source, err);
  if (!line_in) {
    return 1;
  }
  const auto key = keys::parse_authorized_key_line(*line_in);
  if (!key) {
    err << "snigate: keys add: " << source << ": not an OpenSSH public key ("
        << key.error().message() << ")\n";
    return 1;
  }
  if (!line_in->starts_with(key->type)) {
    // Options on the input (restrict, permitlisten=...) would be dropped silently otherwise.
    err << "snigate: keys add: " << source
        << ": give a plain public key; options come from --allow/--from/--expires\n";
    return 1;
  }

  std::vector<std::string> options;
  std::vector<std::string> warnings;
  if (const int status = options_of(a, "add", where.advertised_port, &options, &warnings, err)) {
    return status;
  }
  const std::string name = display_name(a.name.value_or(key->comment));
  std::string line;
  const auto check = checked_line(options, *key, name, a.allow.size(), "add", &line, err);
  if (!check) {
    return 1;
  }

  const Target& t = where.target;
  const std::string file = t.is_dir ? (fs::path(t.path) / kDirFile).string() : t.path;
  std::string content;
  try {
    for (const auto& kf : load_files(t)) {
      for (const auto& existing : kf.keys) {
        if (existing.type == key->type && existing.blob_base64 == key->blob_base64) {
          err << "snigate: keys add: this key (" << key->fingerprint
              << ") is already authorized at " << existing.loc
              << " (change its options with snigate keys edit)\n";
          return 1;
        }
      }
    }
    // Read after the duplicate scan, once, and rewrite exactly this text plus our line.
    content = read_existing(file);
  } catch (const std::exception& e) {
    err << "snigate: keys add: " << e.what() << "\n";
    return 1;
  }
  if (!content.empty() && content.back() != '\n') {
    content += '\n';
  }
  content += line + "\n";
  if (!write_atomically(file, content, err)) {
    return 1;
  }
  print_warnings("add", warnings, err);
  out << "added " << check->fingerprint << " " << (name.empty() ? "(no name)" : name) << " to "
      << file
      << (t.is_dir ? " (--file is a directory: keys added here go to its snigate-keys)" : "")
      << "\n";
  return 0;
}

int list(const Args& a, const Target& t, std::ostream& out, std::ostream& err) {
  std::vector<std::string> warnings;
  std::shared_ptr<const keys::KeyStore> store;
  try {
    // The gateway's loader: what it would honour, with its warnings for what it would skip.
    store = keys::load_key_store(t.path, &warnings);
  } catch (const std::exception& e) {
    err << "snigate: keys list: " << e.what() << "\n";
    return 1;
  }
  for (const auto& w : warnings) {
    err << "snigate: keys list: warning: " << w << "\n";
  }
  const auto& all = store->keys();
  if (a.json) {
    out << "[";
    for (std::size_t i = 0; i < all.size(); ++i) {
      const auto& k = all[i];
      std::vector<std::string> allow, open;
      for (const auto& p : k.options.permit_listen) {
        allow.push_back(listen_text(p));
      }
      for (const auto& p : k.options.permit_open) {
        open.push_back(listen_text(p));
      }
      out << (i ? "," : "")
          << JsonObject()
                 .str("fingerprint", k.fingerprint)
                 .str("name", k.comment)
                 .str("type", k.type)
                 .str_array("allow", allow)
                 .str_array("open", open)  // permitopen: internal endpoints it may reach
                 .str_array("from", k.options.from)
                 .boolean("port_forwarding", k.options.port_forwarding)
                 .str_or_null("expires", k.options.expiry_unix ? expiry_text(k.options) : "")
                 .str("location", k.loc)
                 .take();
    }
    out << "]\n";
    return 0;
  }
  for (const auto& k : all) {
    std::string from;
    for (const auto& f : k.options.from) {
      from += (from.empty() ? "" : ",") + f;
    }
    out << k.fingerprint << "  " << (k.comment.empty() ? "-" : printable(k.comment, 100))
        << "  allow=" << printable(allowed_names(k.options), 400)
        << (k.options.permit_open.empty() ? std::string()
                                          : "  open=" + printable(open_text(k.options), 400))
        << "  from=" << (from.empty() ? "-" : printable(from, 400))
        << "  expires=" << expiry_text(k.options) << "  " << k.loc << "\n";
  }
  if (all.empty()) {
    out << "(no keys in " << t.path << ")\n";
  }
  return 0;
}

/// `content` with the lines numbered in `changes` (1-based, split on '\n' exactly as
/// parse_authorized_keys counts them) dropped (nullopt) or replaced (keeping that line's own
/// ending, CRLF or none); every other byte is kept, CRs and a missing final newline included.
std::string rewrite_lines(std::string_view content,
                          const std::map<std::size_t, std::optional<std::string>>& changes) {
  std::string kept;
  for (std::size_t n = 1; !content.empty(); ++n) {
    const std::size_t nl = content.find('\n');
    const std::size_t len = nl == std::string_view::npos ? content.size() : nl + 1;
    const std::string_view line = content.substr(0, len);
    if (const auto it = changes.find(n); it == changes.end()) {
      kept.append(line);
    } else if (it->second) {
      const std::size_t body = line.find_last_not_of("\r\n") + 1;
      kept.append(*it->second).append(line.substr(body == 0 ? line.size() : body));
    }
    content.remove_prefix(len);
  }
  return kept;
}

/// The line number of a parsed key (its loc is "file:line").
std::size_t line_of(const keys::AuthorizedKey& k) {
  return std::stoul(k.loc.substr(k.loc.rfind(':') + 1));
}

/// The keys `which` names (a fingerprint SHA256:..., else a name) in every file.
struct Matches {
  bool by_fingerprint = false;
  std::set<std::string> distinct;  ///< fingerprints
  std::vector<std::pair<const KeyFile*, const keys::AuthorizedKey*>> hits;
};

Matches find_keys(const std::vector<KeyFile>& files, const std::string& which) {
  Matches m;
  // A fingerprint is never taken for a name, so `remove SHA256:x` can't hit a key named so.
  m.by_fingerprint = which.starts_with("SHA256:");
  for (const auto& kf : files) {
    for (const auto& k : kf.keys) {
      if (m.by_fingerprint ? k.fingerprint == which : k.comment == which) {
        m.distinct.insert(k.fingerprint);
        m.hits.emplace_back(&kf, &k);
      }
    }
  }
  return m;
}

/// Loads the target's files and finds `a.positional[0]` in them. Returns 0, or the exit
/// status after one line on `err` (no such key; several keys by that name unless `a.all`).
int load_and_find(const Args& a, const Target& t, std::vector<KeyFile>* files, Matches* m,
                  std::ostream& err) {
  if (a.positional.size() != 1 || a.positional[0].empty()) {
    return usage_error(a.verb, "give one fingerprint (SHA256:...) or name", err);
  }
  const std::string& which = a.positional[0];
  try {
    *files = load_files(t);
  } catch (const std::exception& e) {
    err << "snigate: keys " << a.verb << ": " << e.what() << "\n";
    return 1;
  }
  *m = find_keys(*files, which);
  if (m->hits.empty()) {
    err << "snigate: keys " << a.verb << ": no key with "
        << (m->by_fingerprint ? "fingerprint " : "name ") << printable(which, 80)
        << " (see snigate keys list)\n";
    return 1;
  }
  if (m->distinct.size() > 1 && !a.all) {
    err << "snigate: keys " << a.verb << ": " << m->distinct.size() << " different keys are named "
        << printable(which, 80) << "; " << a.verb << " one by fingerprint"
        << (a.verb == "remove" ? ", or pass --all" : "") << "\n";
    return 1;
  }
  return 0;
}

int remove(const Args& a, const Target& t, std::ostream& out, std::ostream& err) {
  std::vector<KeyFile> files;
  Matches m;
  if (const int status = load_and_find(a, t, &files, &m, err)) {
    return status;
  }
  for (const auto& kf : files) {
    std::map<std::size_t, std::optional<std::string>> drop;
    std::vector<const keys::AuthorizedKey*> removed;
    for (const auto& [file, k] : m.hits) {
      if (file == &kf) {
        drop[line_of(*k)] = std::nullopt;
        removed.push_back(k);
      }
    }
    if (drop.empty()) {
      continue;
    }
    // Rewrites the text we parsed, so a line number can't point at a line edited since.
    if (!write_atomically(kf.path, rewrite_lines(kf.content, drop), err)) {
      return 1;
    }
    for (const auto* k : removed) {
      out << "removed " << k->fingerprint << " "
          << (k->comment.empty() ? "-" : printable(k->comment, 100)) << " (" << k->loc << ")\n";
    }
  }
  return 0;
}

/// The options of an authorized_keys line, one string each ("restrict",
/// "permitlisten=\"a:443\""), up to the first space outside quotes; none if the line starts
/// with the key type. The line has already parsed, so its quoting is sound.
std::vector<std::string> line_options(std::string_view line, const std::string& type) {
  const std::size_t start = line.find_first_not_of(" \t");
  line.remove_prefix(start == std::string_view::npos ? line.size() : start);
  std::vector<std::string> out;
  if (line.starts_with(type + " ") || line.starts_with(type + "\t")) {
    return out;
  }
  std::string current;
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (!quoted && (c == ' ' || c == '\t')) {
      break;
    }
    if (!quoted && c == ',') {
      out.push_back(std::move(current));
      current.clear();
      continue;
    }
    if (quoted && c == '\\' && i + 1 < line.size()) {
      current += c;
      current += line[++i];  // an escaped quote does not end the value
      continue;
    }
    quoted = c == '"' ? !quoted : quoted;
    current += c;
  }
  out.push_back(std::move(current));
  return out;
}

int edit(const Args& a, const Where& where, std::ostream& out, std::ostream& err) {
  if (!a.name && a.allow.empty() && a.from.empty() && !a.expires) {
    return usage_error("edit", "nothing to change: give --name, --allow, --from or --expires", err);
  }
  std::vector<KeyFile> files;
  Matches m;
  if (const int status = load_and_find(a, where.target, &files, &m, err)) {
    return status;
  }
  if (m.hits.size() > 1) {
    err << "snigate: keys edit: " << m.hits.front().second->fingerprint << " is on "
        << m.hits.size() << " lines (" << m.hits.front().second->loc << ", "
        << m.hits[1].second->loc << "); remove the repeats first\n";
    return 1;
  }
  const auto& [kf, key] = m.hits.front();
  std::vector<std::string> added;
  std::vector<std::string> warnings;
  if (const int status = options_of(a, "edit", where.advertised_port, &added, &warnings, err)) {
    return status;
  }
  // Keep every option the flags don't replace (restrict, port-forwarding, ...), in order.
  std::string_view rest = kf->content;
  for (std::size_t n = 1; n < line_of(*key); ++n) {
    rest.remove_prefix(rest.find('\n') + 1);
  }
  const std::string old_line(rest.substr(0, rest.find('\n')));
  std::vector<std::string> options;
  for (auto& o : line_options(old_line, key->type)) {
    const std::string name = o.substr(0, o.find('='));
    const bool replaced = (name == "permitlisten" && !a.allow.empty()) ||
                          (name == "from" && !a.from.empty()) ||
                          (name == "expiry-time" && a.expires);
    if (!replaced) {
      options.push_back(std::move(o));
    }
  }
  options.insert(options.end(), added.begin(), added.end());
  const std::size_t allows = a.allow.empty() ? key->options.permit_listen.size() : a.allow.size();
  const std::string name = a.name ? display_name(*a.name) : key->comment;
  std::string line;
  const auto check = checked_line(options, *key, name, allows, "edit", &line, err);
  if (!check) {
    return 1;
  }
  if (!write_atomically(kf->path, rewrite_lines(kf->content, {{line_of(*key), line}}), err)) {
    return 1;
  }
  print_warnings("edit", warnings, err);
  out << "edited " << check->fingerprint << " " << (name.empty() ? "(no name)" : name) << " ("
      << key->loc << "): allow=" << printable(allowed_names(check->options), 400)
      << " expires=" << expiry_text(check->options)
      << "; its live sessions keep the names still allowed\n";
  return 0;
}

}  // namespace

int run_keys_command(const std::vector<std::string>& args, const Environment& env,
                     const FileReader& read_file, std::istream& in, std::ostream& out,
                     std::ostream& err) {
  if (args.empty()) {
    return usage_error("", "give add, edit, list or remove", err);
  }
  if (args[0] == "help" || std::find_if(args.begin(), args.end(), [](const std::string& w) {
                             return w == "--help" || w == "-h";
                           }) != args.end()) {
    out << kUsage;
    return 0;
  }
  int status = 2;
  const auto a = parse(args, &status, err);
  if (!a) {
    return status;
  }
  // Where the keys are: serve's own settings, so `keys` never looks anywhere else.
  std::vector<std::string> settings_args = {"snigate", "keys"};
  settings_args.insert(settings_args.end(), a->settings.begin(), a->settings.end());
  const ParseResult settings = parse_args(settings_args, env, read_file);
  if (!settings.error.empty()) {
    err << settings.error << "\n";
    return 2;
  }
  const Where where = where_of(settings.config);
  if (a->verb == "add") {
    return add(*a, where, in, out, err);
  }
  if (a->verb == "edit") {
    return edit(*a, where, out, err);
  }
  if (a->verb == "list") {
    if (!a->positional.empty()) {
      return usage_error("list", "unexpected argument " + printable(a->positional[0], 40), err);
    }
    return list(*a, where.target, out, err);
  }
  return remove(*a, where.target, out, err);
}

int run_keys_command(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
                     std::ostream& err) {
  return run_keys_command(args, Environment{}, read_text_file, in, out, err);
}

}  // namespace gw::app

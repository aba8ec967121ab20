// `snigate keys add|list|remove`; see keys_command.hpp. Validation is the gateway's own parser
// (keys/authorized_keys) run on each option alone, for a message naming the flag, and on the
// finished line; listing is the gateway's own loader (keys/key_store), so `list` shows exactly
// the keys the gateway honours and warns about the lines it skips.
#include "app/keys_command.hpp"

#include "app/json.hpp"

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

#include "common/printable.hpp"
#include "keys/authorized_keys.hpp"
#include "keys/key_store.hpp"

namespace gw::app {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    "usage: snigate keys add [--name N] [--allow PATTERN[:PORT]]... [--from PATTERN]...\n"
    "                        [--expires YYYY-MM-DD] [--file PATH | --state-dir DIR] PUBKEY_FILE|-\n"
    "       snigate keys list [--json] [--file PATH | --state-dir DIR]\n"
    "       snigate keys remove [--all] [--file PATH | --state-dir DIR] FINGERPRINT|NAME\n"
    "PATH may be a directory of key files: add writes PATH/snigate-keys, list and remove read\n"
    "every file. The default is ./snigate-data/authorized_keys (STATE_DIR/authorized_keys).\n";

/// The file `keys add` writes when --file names a directory.
constexpr const char* kDirFile = "snigate-keys";

struct Args {
  std::string verb;
  std::optional<std::string> file, state_dir, name, expires;
  std::vector<std::string> allow, from, positional;
  bool json = false, all = false;
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
  const std::map<std::string, std::set<std::string>> kOptions = {
      {"add", {"--name", "--allow", "--from", "--expires", "--file", "--state-dir"}},
      {"list", {"--json", "--file", "--state-dir"}},
      {"remove", {"--all", "--file", "--state-dir"}},
  };
  const auto verb_options = kOptions.find(a.verb);
  if (verb_options == kOptions.end()) {
    *status = usage_error(
        "", "unknown command " + printable(a.verb, 40) + " (expected add, list or remove)", err);
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
    if (!verb_options->second.count(word)) {
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
    auto& slot = word == "--file"        ? a.file
                 : word == "--state-dir" ? a.state_dir
                 : word == "--name"      ? a.name
                                         : a.expires;
    if (slot) {
      *status = usage_error(a.verb, word + " given twice", err);
      return std::nullopt;
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

Target target_of(const Args& a) {
  const std::string p =
      a.file ? *a.file
             : (fs::path(a.state_dir.value_or("./snigate-data")) / "authorized_keys").string();
  std::error_code ec;
  return Target{p, fs::is_directory(p, ec)};
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

/// Splits a comma list; empty elements are kept (and refused by the callers).
std::vector<std::string_view> split_commas(std::string_view s) {
  std::vector<std::string_view> out;
  for (;;) {
    const std::size_t comma = s.find(',');
    out.push_back(s.substr(0, comma));
    if (comma == std::string_view::npos) {
      return out;
    }
    s.remove_prefix(comma + 1);
  }
}

/// Checks one --allow value and returns the permitlisten value for it ("host:443" unless a
/// port is given); on refusal `*why` says what is wrong.
std::optional<std::string> permitlisten_of(const std::string& pattern, std::string* why) {
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
  for (std::string_view element : split_commas(host)) {
    if (element.starts_with('!')) {
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
  }
  if (const auto parsed = keys::parse_key_options("permitlisten=\"" + value + "\""); !parsed) {
    *why = parsed.error().message();
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

/// "2027-01-31" -> "20270131"; other text unchanged (the parser then judges it).
std::string expiry_digits(const std::string& date) {
  if (date.size() == 10 && date[4] == '-' && date[7] == '-') {
    return date.substr(0, 4) + date.substr(5, 2) + date.substr(8, 2);
  }
  return date;
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

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) {
    return {};
  }
  return std::string(s.substr(b, s.find_last_not_of(" \t\r") - b + 1));
}

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

int add(const Args& a, std::istream& in, std::ostream& out, std::ostream& err) {
  if (a.positional.size() != 1) {
    return usage_error("add", "give one public key file (or - for standard input)", err);
  }
  const std::string source = a.positional[0];
  std::string text;
  if (source == "-") {
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    std::error_code ec;
    if (!fs::is_regular_file(source, ec)) {
      err << "snigate: keys add: " << source << ": no such file\n";
      return 1;
    }
    try {
      text = keys::read_key_file(source);
    } catch (const std::exception& e) {
      err << "snigate: keys add: " << e.what() << "\n";
      return 1;
    }
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
  for (const auto& pattern : a.allow) {
    std::string why;
    const auto value = permitlisten_of(pattern, &why);
    if (!value) {
      err << "snigate: keys add: --allow " << printable(pattern, 80) << ": " << why << "\n";
      return 1;
    }
    options.push_back("permitlisten=\"" + *value + "\"");
  }
  std::vector<std::string> warnings;
  if (!a.from.empty()) {
    std::string joined;
    for (const auto& f : a.from) {
      if (std::string why; !from_ok(f, &why, &warnings)) {
        err << "snigate: keys add: --from " << printable(f, 80) << ": " << why << "\n";
        return 1;
      }
      joined += (joined.empty() ? "" : ",") + f;
    }
    options.push_back("from=\"" + joined + "\"");
  }
  if (a.expires) {
    const std::string option = "expiry-time=\"" + expiry_digits(*a.expires) + "\"";
    const auto parsed = keys::parse_key_options(option);
    if (!parsed || quoting_problem(*a.expires) != "") {
      return usage_error("add",
                         "--expires " + printable(*a.expires, 40) +
                             ": expected a date YYYY-MM-DD (UTC), or YYYYMMDD[HHMM[SS]]",
                         err);
    }
    if (*parsed->expiry_unix <= static_cast<std::int64_t>(std::time(nullptr))) {
      warnings.push_back("--expires " + *a.expires + " is in the past: the key is refused");
    }
    options.push_back(option);
  }
  std::string name = a.name.value_or(key->comment);
  std::replace_if(
      name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; }, ' ');
  name = trim(name);

  std::string line;
  for (const auto& o : options) {
    line += (line.empty() ? "" : ",") + o;
  }
  line += (line.empty() ? "" : " ") + key->type + " " + key->blob_base64;
  if (!name.empty()) {
    line += " " + name;
  }
  // The finished line must read back as what we meant, through the gateway's parser.
  const auto check = keys::parse_authorized_key_line(line);
  if (!check || check->options.permit_listen.size() != a.allow.size() || check->comment != name ||
      check->fingerprint != key->fingerprint) {
    err << "snigate: keys add: the line would not read back as given ("
        << (check ? "options differ" : check.error().message()) << "): " << printable(line, 200)
        << "\n";
    return 1;
  }

  const Target t = target_of(a);
  const std::string file = t.is_dir ? (fs::path(t.path) / kDirFile).string() : t.path;
  std::string content;
  try {
    for (const auto& kf : load_files(t)) {
      for (const auto& existing : kf.keys) {
        if (existing.type == key->type && existing.blob_base64 == key->blob_base64) {
          err << "snigate: keys add: this key (" << key->fingerprint
              << ") is already authorized at " << existing.loc
              << " (remove it first to change its options)\n";
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
  for (const auto& w : warnings) {
    err << "snigate: keys add: warning: " << w << "\n";
  }
  out << "added " << check->fingerprint << " " << (name.empty() ? "(no name)" : name) << " to "
      << file
      << (t.is_dir ? " (--file is a directory: keys added here go to its snigate-keys)" : "")
      << "\n";
  return 0;
}

int list(const Args& a, std::ostream& out, std::ostream& err) {
  const Target t = target_of(a);
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
      std::vector<std::string> allow;
      for (const auto& p : k.options.permit_listen) {
        allow.push_back(listen_text(p));
      }
      out << (i ? "," : "")
          << JsonObject()
                 .str("fingerprint", k.fingerprint)
                 .str("name", k.comment)
                 .str("type", k.type)
                 .str_array("allow", allow)
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
        << "  from=" << (from.empty() ? "-" : printable(from, 400))
        << "  expires=" << expiry_text(k.options) << "  " << k.loc << "\n";
  }
  if (all.empty()) {
    out << "(no keys in " << t.path << ")\n";
  }
  return 0;
}

/// `content` without the lines numbered in `drop` (1-based, split on '\n' exactly as
/// parse_authorized_keys counts them); every other byte is kept, CRs and a missing final
/// newline included.
std::string without_lines(std::string_view content, const std::set<std::size_t>& drop) {
  std::string kept;
  for (std::size_t n = 1; !content.empty(); ++n) {
    const std::size_t nl = content.find('\n');
    const std::size_t len = nl == std::string_view::npos ? content.size() : nl + 1;
    if (!drop.count(n)) {
      kept.append(content.substr(0, len));
    }
    content.remove_prefix(len);
  }
  return kept;
}

int remove(const Args& a, std::ostream& out, std::ostream& err) {
  if (a.positional.size() != 1) {
    return usage_error("remove", "give one fingerprint (SHA256:...) or name", err);
  }
  const std::string& which = a.positional[0];
  std::vector<KeyFile> files;
  try {
    files = load_files(target_of(a));
  } catch (const std::exception& e) {
    err << "snigate: keys remove: " << e.what() << "\n";
    return 1;
  }
  // A fingerprint is never taken for a name, so `remove SHA256:x` can't hit a key named so.
  const bool by_fingerprint = which.starts_with("SHA256:");
  std::set<std::string> distinct;
  std::size_t hits = 0;
  for (const auto& kf : files) {
    for (const auto& k : kf.keys) {
      if (by_fingerprint ? k.fingerprint == which : k.comment == which) {
        distinct.insert(k.fingerprint);
        ++hits;
      }
    }
  }
  if (hits == 0) {
    err << "snigate: keys remove: no key with " << (by_fingerprint ? "fingerprint " : "name ")
        << printable(which, 80) << " (see snigate keys list)\n";
    return 1;
  }
  if (distinct.size() > 1 && !a.all) {
    err << "snigate: keys remove: " << distinct.size() << " different keys are named "
        << printable(which, 80) << "; remove one by fingerprint, or pass --all\n";
    return 1;
  }
  for (const auto& kf : files) {
    std::set<std::size_t> drop;
    std::vector<const keys::AuthorizedKey*> removed;
    for (const auto& k : kf.keys) {
      if (by_fingerprint ? k.fingerprint == which : k.comment == which) {
        drop.insert(std::stoul(k.loc.substr(k.loc.rfind(':') + 1)));
        removed.push_back(&k);
      }
    }
    if (drop.empty()) {
      continue;
    }
    // Rewrites the text we parsed, so a line number can't point at a line edited since.
    if (!write_atomically(kf.path, without_lines(kf.content, drop), err)) {
      return 1;
    }
    for (const auto* k : removed) {
      out << "removed " << k->fingerprint << " "
          << (k->comment.empty() ? "-" : printable(k->comment, 100)) << " (" << k->loc << ")\n";
    }
  }
  return 0;
}

}  // namespace

int run_keys_command(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
                     std::ostream& err) {
  if (args.empty()) {
    return usage_error("", "give add, list or remove", err);
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
  if (a->verb == "add") {
    return add(*a, in, out, err);
  }
  if (a->verb == "list") {
    if (!a->positional.empty()) {
      return usage_error("list", "unexpected argument " + printable(a->positional[0], 40), err);
    }
    return list(*a, out, err);
  }
  return remove(*a, out, err);
}

int run_keys_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return run_keys_command(args, std::cin, out, err);
}

}  // namespace gw::app

#include "app/keys_command.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "common/printable.hpp"
#include "keys/authorized_keys.hpp"

namespace gw::app {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    "usage: snigate keys add [--name N] [--allow PATTERN]... [--from PATTERN]...\n"
    "                        [--expires YYYY-MM-DD] [--file PATH | --state-dir DIR] PUBKEY_FILE|-\n"
    "       snigate keys list [--json] [--file PATH | --state-dir DIR]\n"
    "       snigate keys remove [--all] [--file PATH | --state-dir DIR] FINGERPRINT|NAME\n";

/// Where keys live: a file, or a directory of files (add writes DIR/snigate-keys).
struct Target {
  fs::path path;
  bool is_dir = false;
};

struct Args {
  std::string verb;
  std::optional<std::string> file, state_dir, name, expires;
  std::vector<std::string> allow, from, positional;
  bool json = false, all = false;
};

/// Parses `--opt value`, `--opt=value` and flags; nullopt (with a message) on misuse.
std::optional<Args> parse(const std::vector<std::string>& args, std::ostream& err) {
  Args a;
  if (args.empty()) {
    err << kUsage;
    return std::nullopt;
  }
  a.verb = args[0];
  for (std::size_t i = 1; i < args.size(); ++i) {
    std::string word = args[i];
    std::optional<std::string> inline_value;
    if (const auto eq = word.find('='); word.starts_with("--") && eq != std::string::npos) {
      inline_value = word.substr(eq + 1);
      word = word.substr(0, eq);
    }
    const auto value = [&]() -> std::optional<std::string> {
      if (inline_value) {
        return inline_value;
      }
      if (i + 1 >= args.size()) {
        err << "snigate: keys " << a.verb << ": " << word << " needs a value\n";
        return std::nullopt;
      }
      return args[++i];
    };
    std::optional<std::string> v;
    if (word == "--json" || word == "--all") {
      (word == "--json" ? a.json : a.all) = true;
      continue;
    }
    if (word == "--file" || word == "--state-dir" || word == "--name" || word == "--expires" ||
        word == "--allow" || word == "--from") {
      if (!(v = value())) {
        return std::nullopt;
      }
      if (word == "--file") a.file = *v;
      if (word == "--state-dir") a.state_dir = *v;
      if (word == "--name") a.name = *v;
      if (word == "--expires") a.expires = *v;
      if (word == "--allow") a.allow.push_back(*v);
      if (word == "--from") a.from.push_back(*v);
      continue;
    }
    if (word.starts_with("--")) {
      err << "snigate: keys " << a.verb << ": unknown option " << printable(word, 40) << "\n"
          << kUsage;
      return std::nullopt;
    }
    a.positional.push_back(args[i]);
  }
  return a;
}

Target target_of(const Args& a) {
  const fs::path p = a.file ? fs::path(*a.file)
                            : fs::path(a.state_dir.value_or("./snigate-data")) / "authorized_keys";
  std::error_code ec;
  return Target{p, fs::is_directory(p, ec)};
}

/// The files that hold keys: the file itself, or the directory's regular files in name order
/// (dotfiles and editor backups skipped, like the gateway's loader).
std::vector<fs::path> files_of(const Target& t) {
  if (!t.is_dir) {
    return {t.path};
  }
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(t.path, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_regular_file() && !n.starts_with(".") && !n.ends_with("~")) {
      files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Replaces `p` with `content` atomically: a reader sees the old file or the new one, never
/// half of either. Keeps an existing file's mode; new files are 0600.
bool write_atomically(const fs::path& p, const std::string& content, std::ostream& err) {
  std::error_code ec;
  fs::create_directories(p.parent_path().empty() ? fs::path(".") : p.parent_path(), ec);
  struct stat st {};
  const mode_t mode = ::stat(p.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0600;
  std::string tmp = p.string() + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    err << "snigate: keys: cannot create a temporary file next to " << p.string() << "\n";
    return false;
  }
  bool ok = ::fchmod(fd, mode) == 0;
  std::size_t done = 0;
  while (ok && done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    ok = n > 0;
    done += n > 0 ? static_cast<std::size_t>(n) : 0;
  }
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), p.c_str()) != 0) {
    ::unlink(tmp.c_str());
    err << "snigate: keys: cannot write " << p.string() << "\n";
    return false;
  }
  return true;
}

/// Every key of every file, with its location ("file:line").
std::vector<keys::AuthorizedKey> load_all(const Target& t) {
  std::vector<keys::AuthorizedKey> all;
  for (const auto& f : files_of(t)) {
    auto r = keys::parse_authorized_keys(read_file(f), f.string());
    all.insert(all.end(), r.keys.begin(), r.keys.end());
  }
  return all;
}

/// "2027-01-31" or "20270131" -> "20270131"; empty when it is neither.
std::string expiry_of(const std::string& date) {
  std::string digits;
  for (const char c : date) {
    if (c != '-') {
      digits += c;
    }
  }
  const bool ok = (digits.size() == 8 || digits.size() == 12 || digits.size() == 14) &&
                  std::all_of(digits.begin(), digits.end(), ::isdigit);
  return ok ? digits : std::string();
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
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
    s += (s.empty() ? "" : ",") + p.host_pattern + ":" +
         (p.port ? std::to_string(*p.port) : std::string("*"));
  }
  return s;
}

std::string expiry_text(const keys::KeyOptions& o) {
  if (!o.expiry_unix) {
    return "-";
  }
  const std::time_t t = static_cast<std::time_t>(*o.expiry_unix);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int add(const Args& a, std::ostream& out, std::ostream& err) {
  if (a.positional.size() != 1) {
    err << "snigate: keys add: give one public key file (or - for standard input)\n" << kUsage;
    return 2;
  }
  const std::string source = a.positional[0];
  std::string text;
  if (source == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::error_code ec;
    if (!fs::is_regular_file(source, ec)) {
      err << "snigate: keys add: " << source << ": no such file\n";
      return 1;
    }
    text = read_file(source);
  }
  const std::string first_line = text.substr(0, text.find('\n'));
  auto key = keys::parse_authorized_key_line(first_line);
  if (!key) {
    err << "snigate: keys add: " << source << ": not an OpenSSH public key ("
        << key.error().message() << ")\n";
    return 1;
  }
  if (!key->options.permit_listen.empty() || !key->options.from.empty() ||
      key->options.expiry_unix) {
    err << "snigate: keys add: " << source
        << ": give a plain public key; options come from --allow/--from/--expires\n";
    return 1;
  }
  std::vector<std::string> options;
  for (std::string pattern : a.allow) {
    if (pattern.find(':') == std::string::npos) {
      pattern += ":443";
    }
    options.push_back("permitlisten=\"" + pattern + "\"");
  }
  if (!a.from.empty()) {
    std::string joined;
    for (const auto& f : a.from) {
      joined += (joined.empty() ? "" : ",") + f;
    }
    options.push_back("from=\"" + joined + "\"");
  }
  if (a.expires) {
    const std::string e = expiry_of(*a.expires);
    if (e.empty()) {
      err << "snigate: keys add: --expires " << printable(*a.expires, 40)
          << ": expected YYYY-MM-DD\n";
      return 2;
    }
    options.push_back("expiry-time=\"" + e + "\"");
  }
  std::string name = a.name.value_or(key->comment);
  std::replace_if(name.begin(), name.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  std::string line;
  for (const auto& o : options) {
    line += (line.empty() ? "" : ",") + o;
  }
  line += (line.empty() ? "" : " ") + key->type + " " + key->blob_base64;
  if (!name.empty()) {
    line += " " + name;
  }
  // The line must read back as what we meant: this validates every pattern and the date.
  const auto check = keys::parse_authorized_key_line(line);
  if (!check) {
    err << "snigate: keys add: " << check.error().message() << " in: " << printable(line, 200)
        << "\n";
    return 1;
  }
  const Target t = target_of(a);
  for (const auto& existing : load_all(t)) {
    if (existing.type == key->type && existing.blob_base64 == key->blob_base64) {
      err << "snigate: keys add: this key is already authorized at " << existing.loc
          << " (remove it first to change its options)\n";
      return 1;
    }
  }
  const fs::path file = t.is_dir ? t.path / "snigate-keys" : t.path;
  std::string content = read_file(file);
  if (!content.empty() && content.back() != '\n') {
    content += '\n';
  }
  content += line + "\n";
  if (!write_atomically(file, content, err)) {
    return 1;
  }
  out << "added " << check->fingerprint << " " << (name.empty() ? "(no name)" : name) << " to "
      << file.string() << "\n";
  return 0;
}

int list(const Args& a, std::ostream& out) {
  const auto all = load_all(target_of(a));
  if (a.json) {
    out << "[";
    for (std::size_t i = 0; i < all.size(); ++i) {
      const auto& k = all[i];
      out << (i ? "," : "") << "{\"fingerprint\":" << json_string(k.fingerprint)
          << ",\"name\":" << json_string(k.comment) << ",\"type\":" << json_string(k.type)
          << ",\"allow\":[";
      for (std::size_t j = 0; j < k.options.permit_listen.size(); ++j) {
        const auto& p = k.options.permit_listen[j];
        out << (j ? "," : "")
            << json_string(p.host_pattern + ":" +
                           (p.port ? std::to_string(*p.port) : std::string("*")));
      }
      out << "],\"from\":[";
      for (std::size_t j = 0; j < k.options.from.size(); ++j) {
        out << (j ? "," : "") << json_string(k.options.from[j]);
      }
      out << "],\"port_forwarding\":" << (k.options.port_forwarding ? "true" : "false")
          << ",\"expires\":"
          << (k.options.expiry_unix ? json_string(expiry_text(k.options)) : "null")
          << ",\"location\":" << json_string(k.loc) << "}";
    }
    out << "]\n";
    return 0;
  }
  for (const auto& k : all) {
    std::string from;
    for (const auto& f : k.options.from) {
      from += (from.empty() ? "" : ",") + f;
    }
    out << k.fingerprint << "  " << (k.comment.empty() ? "-" : k.comment)
        << "  allow=" << allowed_names(k.options) << "  from=" << (from.empty() ? "-" : from)
        << "  expires=" << expiry_text(k.options) << "  " << k.loc << "\n";
  }
  if (all.empty()) {
    out << "(no keys in " << target_of(a).path.string() << ")\n";
  }
  return 0;
}

int remove(const Args& a, std::ostream& out, std::ostream& err) {
  if (a.positional.size() != 1) {
    err << "snigate: keys remove: give one fingerprint (SHA256:...) or name\n" << kUsage;
    return 2;
  }
  const std::string& which = a.positional[0];
  const Target t = target_of(a);
  const auto all = load_all(t);
  std::vector<const keys::AuthorizedKey*> hits;
  std::set<std::string> distinct;
  for (const auto& k : all) {
    if (k.fingerprint == which || (!which.starts_with("SHA256:") && k.comment == which)) {
      hits.push_back(&k);
      distinct.insert(k.fingerprint);
    }
  }
  if (hits.empty()) {
    err << "snigate: keys remove: no key with fingerprint or name " << printable(which, 80)
        << " (see snigate keys list)\n";
    return 1;
  }
  if (distinct.size() > 1 && !a.all) {
    err << "snigate: keys remove: " << distinct.size() << " different keys are named "
        << printable(which, 80) << "; remove one by fingerprint, or pass --all\n";
    return 1;
  }
  // Lines to drop, per file ("file:line" -> line numbers).
  std::map<std::string, std::set<std::size_t>> drop;
  for (const auto* k : hits) {
    const auto colon = k->loc.rfind(':');
    drop[k->loc.substr(0, colon)].insert(std::stoul(k->loc.substr(colon + 1)));
  }
  for (const auto& [file, lines] : drop) {
    std::istringstream in(read_file(file));
    std::string content, line;
    for (std::size_t n = 1; std::getline(in, line); ++n) {
      if (!lines.count(n)) {
        content += line + "\n";
      }
    }
    if (!write_atomically(file, content, err)) {
      return 1;
    }
  }
  for (const auto* k : hits) {
    out << "removed " << k->fingerprint << " " << (k->comment.empty() ? "-" : k->comment)
        << " (" << k->loc << ")\n";
  }
  return 0;
}

}  // namespace

int run_keys_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  const auto a = parse(args, err);
  if (!a) {
    return 2;
  }
  if (a->verb == "add") {
    return add(*a, out, err);
  }
  if (a->verb == "list") {
    return list(*a, out);
  }
  if (a->verb == "remove") {
    return remove(*a, out, err);
  }
  err << "snigate: keys: unknown command " << printable(a->verb, 40) << "\n" << kUsage;
  return 2;
}

}  // namespace gw::app

// `tls` command parsing and tcpip-forward authorisation; see policy.hpp. Default-deny: every
// branch that doesn't positively allow a forward refuses it with a sentence the user can act on.
#include "sshd/policy.hpp"

#include <algorithm>
#include <array>

#include "common/ascii.hpp"
#include "common/cidr.hpp"
#include "common/printable.hpp"
#include "keys/pattern.hpp"

namespace gw::sshd {
namespace {

constexpr std::string_view kPrefix = "snigate: ";

CommandResult fail(std::string message) {
  CommandResult r;
  r.error = std::string(kPrefix) + std::move(message);
  if (!r.error.ends_with('\n')) {
    r.error.push_back('\n');
  }
  return r;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Shell-like enough for `tls --allow-cidr '10.0.0.0/8'`: quotes group, no escapes, no expansion.
std::optional<std::vector<std::string>> tokenize(std::string_view s) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) {
      ++i;
    }
    if (i == s.size()) {
      break;
    }
    std::string word;
    while (i < s.size() && !is_space(s[i])) {
      const char c = s[i++];
      if (c == '\'' || c == '"') {
        const std::size_t close = s.find(c, i);
        if (close == std::string_view::npos) {
          return std::nullopt;
        }
        word.append(s.substr(i, close - i));
        i = close + 1;
      } else {
        word.push_back(c);
      }
    }
    words.push_back(std::move(word));
  }
  return words;
}

// Options that only make sense when the gateway terminates TLS: we never do (DESIGN.md 3).
bool is_termination_option(std::string_view name) {
  static constexpr std::array<std::string_view, 6> kExact = {
      "--terminate-at", "--crt",           "--key", "--upstream-proxy-protocol",
      "--proxy-proto",  "--mutual-tls-cas"};
  for (std::string_view e : kExact) {
    if (name == e) {
      return true;
    }
  }
  return name.starts_with("--traffic-policy") || name.starts_with("--mtls") ||
         name.starts_with("--mutual-tls");
}

bool is_unnamed_bind_address(std::string_view lowered) {
  // OpenSSH clients send "" or "localhost" for `-R 443:...`, and "*", "0.0.0.0" or "::" for
  // `-R *:443:...` / `-R 0.0.0.0:443:...`, which people copy from "expose a port" guides. None
  // of them name a host, so all of them mean "generate one"; any other IP literal is refused by
  // Hostname::parse with a hint to use a DNS name.
  static constexpr std::array<std::string_view, 8> kUnnamed = {
      "", "localhost", "localhost.", "*", "0.0.0.0", "::", "127.0.0.1", "::1"};
  for (std::string_view u : kUnnamed) {
    if (lowered == u) {
      return true;
    }
  }
  return false;
}

bool port_allowed(const keys::PermitListen& entry, std::uint16_t advertise_port) {
  // The request's port is already known to be 443, advertise_port or 0; those are one port as
  // far as the user is concerned, so an entry for any of them allows all three.
  return !entry.port || *entry.port == 443 || *entry.port == advertise_port || *entry.port == 0;
}

bool host_allowed(const keys::PermitListen& entry, const tunnel::Hostname& host) {
  const std::string list = ascii::lower(entry.host_pattern);
  if (!host.is_wildcard()) {
    return keys::match_pattern_list(host.str(), list, true) == keys::ListMatch::match;
  }
  // A wildcard request covers many names, so it is allowed only if the pattern allows all of
  // them: the request's `*` must be absorbed by a `*` of the pattern (so `app.a.test` and
  // `?.a.test` don't grant `*.a.test`), and no `!pattern` may overlap anything it covers.
  const keys::GlobOptions covers{.case_insensitive = true, .subject_star_needs_pattern_star = true};
  bool positive = false;
  for (std::string_view item : ascii::split_commas(list)) {
    if (!item.empty() && item.front() == '!') {
      item.remove_prefix(1);
      if (keys::patterns_intersect(host.str(), item, true)) {
        return false;
      }
    } else if (keys::match_pattern(host.str(), item, covers)) {
      positive = true;
    }
  }
  return positive;
}

/// The first other key whose permitlisten names something `host` covers, or null. A bare `*`
/// (every name: `keys add` warns about it) reserves nothing, or no key could use --domain.
const keys::AuthorizedKey* reserved_by(const tunnel::Hostname& host, const ForwardPolicy& policy) {
  if (policy.keys == nullptr) {
    return nullptr;
  }
  for (const auto& other : policy.keys->keys()) {
    if (other.fingerprint == policy.key_fingerprint || !other.options.port_forwarding) {
      continue;
    }
    for (const auto& entry : other.options.permit_listen) {
      const std::string list = ascii::lower(entry.host_pattern);
      for (std::string_view item : ascii::split_commas(list)) {
        if (!item.empty() && item.front() != '!' && item != "*" &&
            keys::patterns_intersect(host.str(), item, true)) {
          return &other;
        }
      }
    }
  }
  return nullptr;
}

std::string describe_permits(const std::vector<keys::PermitListen>& entries) {
  std::string out;
  constexpr std::size_t kShown = 5;
  for (std::size_t i = 0; i < entries.size() && i < kShown; ++i) {
    if (i) {
      out += ", ";
    }
    out += gw::printable(entries[i].host_pattern, 80) + ":" +
           (entries[i].port ? std::to_string(*entries[i].port) : std::string("*"));
  }
  if (entries.size() > kShown) {
    out += ", ...";
  }
  return out;
}

ForwardDecision refuse(std::string why) {
  ForwardDecision d;
  d.refusal = std::move(why);
  return d;
}

}  // namespace

std::string tls_help_text() {
  return "usage: ssh -R NAME:443:localhost:PORT HOST tls [options]\n"
         "       (NAME may be *.NAME, or left out for a generated name; -N works too)\n"
         "options:\n"
         "  --allow-cidr CIDR  only clients in CIDR may connect (repeatable; IPv4 or IPv6)\n"
         "  --deny-cidr CIDR   refuse clients in CIDR (repeatable)\n"
         "  --internal         an internal endpoint: not on the public port, reached with\n"
         "                     ssh -L PORT:NAME:443 / ssh -W NAME:443 (so is any NAME.internal)\n"
         "  --pool             share NAME with other sessions that also pass --pool\n"
         "  --takeover         move NAME here from another session of the same key\n"
         "  --verbose          print one line per connection\n"
         "  --help             print this text and this session's endpoints\n"
         "TLS passes through untouched: your upstream presents its own certificate.\n";
}

bool parse_cidr(std::string_view cidr, std::string* normalised) {
  // One validator for every CIDR in the project (tls options, from=): gw::Cidr.
  const auto parsed = gw::Cidr::parse(cidr);
  if (parsed && normalised) {
    *normalised = parsed->str();
  }
  return parsed.has_value();
}

CommandResult parse_command(std::string_view command_line) {
  auto words = tokenize(command_line);
  if (!words) {
    return fail("unterminated quote in the command");
  }
  CommandResult result;
  TlsCommand cmd;
  std::size_t i = 0;
  if (!words->empty()) {
    const std::string& verb = (*words)[0];
    if (verb == "tls") {
      i = 1;
    } else if (verb == "http" || verb == "tcp") {
      return fail("'" + verb +
                  "' is not supported: this gateway serves TLS endpoints (run: ssh ... tls)");
    } else if (!verb.starts_with("-")) {
      return fail("unknown command '" + gw::printable(verb, 40) +
                  "': this gateway serves TLS endpoints (run: ssh ... tls)");
    }
  }
  for (; i < words->size(); ++i) {
    const std::string& word = (*words)[i];
    if (!word.starts_with("-")) {
      return fail("unexpected argument '" + gw::printable(word, 40) + "'\n" + tls_help_text());
    }
    const std::size_t eq = word.find('=');
    const std::string name = word.substr(0, eq);
    const std::string shown = gw::printable(name, 40);
    if (is_termination_option(name)) {
      return fail(shown + " is not supported over SSH: TLS passes through to your upstream");
    }
    if (name == "--allow-cidr" || name == "--deny-cidr") {
      std::string value;
      if (eq != std::string::npos) {
        value = word.substr(eq + 1);
      } else if (i + 1 < words->size()) {
        value = (*words)[++i];
      } else {
        return fail(name + " needs a value, e.g. " + name + " 203.0.113.0/24");
      }
      std::string cidr;
      if (!parse_cidr(value, &cidr)) {
        return fail(name + ": '" + gw::printable(value, 60) +
                    "' is not a CIDR (e.g. 203.0.113.0/24 or 2001:db8::/32)");
      }
      (name == "--allow-cidr" ? cmd.allow_cidr : cmd.deny_cidr).push_back(std::move(cidr));
      continue;
    }
    bool* flag = name == "--internal"                 ? &cmd.internal
                 : name == "--pool"                   ? &cmd.pool
                 : name == "--takeover"               ? &cmd.takeover
                 : name == "--verbose"                ? &cmd.verbose
                 : (name == "--help" || name == "-h") ? &cmd.help
                                                      : nullptr;
    if (!flag) {
      return fail("unknown option " + shown + "\n" + tls_help_text());
    }
    if (eq != std::string::npos) {
      return fail(shown + " takes no value");
    }
    *flag = true;
  }
  result.command = std::move(cmd);
  return result;
}

ForwardDecision decide_forward(const ForwardRequest& request, const keys::KeyOptions& key,
                               const ForwardPolicy& policy) {
  if (!key.port_forwarding) {
    return refuse(
        "this key may not open tunnels (its authorized_keys line has restrict or "
        "no-port-forwarding)");
  }
  const std::uint32_t port = request.bind_port;
  if (port != 443 && port != policy.advertise_port && port != 0) {
    return refuse("port " + std::to_string(port) + ": use 443 (or 0)");
  }
  ForwardDecision d;
  d.reply_port = port == 0 ? policy.advertise_port : 0;

  if (is_unnamed_bind_address(ascii::lower(request.bind_address))) {
    d.ok = true;  // every key that may forward may use a generated name
    return d;
  }
  const std::string shown = gw::printable(request.bind_address, 80);
  auto host = tunnel::Hostname::parse(request.bind_address, /*allow_wildcard=*/true);
  if (!host) {
    return refuse("cannot use '" + shown + "': " + host.error().message());
  }
  const std::string& name = host->str();

  if (key.permit_listen.empty()) {
    // Only names under --domain; a wildcard must leave at least one label of its own under it
    // (`*.x.DOMAIN`), since `*.DOMAIN` would catch every other user's generated names.
    // Names under .internal too: an internal endpoint is reached only through the gateway by
    // keys the admin allowed (permitopen) or by the same key, so it takes no public name away.
    static const tunnel::Hostname kInternal = *tunnel::Hostname::parse(kInternalSuffix, false);
    const auto under_either = [&](const tunnel::Hostname& h) {
      return h.is_under(policy.domain) || h.is_under(kInternal);
    };
    bool under = under_either(*host);
    if (host->is_wildcard()) {
      auto base = tunnel::Hostname::parse(host->suffix());
      under = base && under_either(*base);
    }
    if (!under) {
      return refuse("cannot use " + name + ": this key may use only names under " +
                    policy.domain.str() + " and .internal (or no name, for a generated one); " +
                    "ask the admin for permitlisten=\"" + name + ":443\" on its authorized_keys " +
                    "line");
    }
    if (reserved_by(*host, policy) != nullptr) {
      return refuse("cannot use " + name + ": authorized_keys gives " +
                    (host->is_wildcard() ? "names under it" : "it") +
                    " to another key (permitlisten); pick another name under " +
                    policy.domain.str());
    }
  } else {
    bool allowed = false;
    for (const auto& entry : key.permit_listen) {
      if (port_allowed(entry, policy.advertise_port) && host_allowed(entry, *host)) {
        allowed = true;
        break;
      }
    }
    if (!allowed) {
      return refuse("cannot use " + name + ":" + std::to_string(port) +
                    ": this key's permitlisten allows only " + describe_permits(key.permit_listen) +
                    " (or no name, for a generated one)");
    }
  }
  d.ok = true;
  d.hostname = std::move(*host);
  return d;
}

bool is_internal_name(std::string_view host) {
  return host.ends_with(".internal") && host.size() > kInternalSuffix.size() + 1;
}

DirectDecision decide_direct_open(
    const DirectRequest& request, const keys::KeyOptions& key, std::string_view key_fingerprint,
    std::uint16_t advertise_port,
    const std::function<DirectTarget(const tunnel::Hostname&)>& lookup) {
  using Code = DirectDecision::Code;
  const auto no = [](Code code, const char* reason, std::string why) {
    DirectDecision d;
    d.code = code;
    d.reason = reason;
    d.refusal = std::move(why);
    return d;
  };
  if (!key.port_forwarding) {
    return no(Code::administratively_prohibited, "restricted",
              "this key may not open connections through the gateway (its authorized_keys "
              "line has restrict or no-port-forwarding; port-forwarding after restrict "
              "re-enables it)");
  }
  const std::string shown = gw::printable(request.host, 80);
  if (request.port != 443 && request.port != advertise_port) {
    return no(Code::connect_failed, "bad_port",
              "port " + std::to_string(request.port) +
                  ": internal endpoints are reached on port 443 (ssh -L LOCAL:" + shown + ":443)");
  }
  auto host = tunnel::Hostname::parse(request.host, /*allow_wildcard=*/false);
  if (!host) {
    return no(Code::connect_failed, "bad_name",
              "cannot reach '" + shown + "': " + host.error().message());
  }
  const std::string& name = host->str();
  const std::string ask =
      "ask the admin for permitopen=\"" + name + ":443\" on your key's authorized_keys line";
  if (!key.permit_open.empty()) {
    bool allowed = false;
    for (const auto& entry : key.permit_open) {
      if (port_allowed(entry, advertise_port) &&
          keys::match_pattern_list(name, ascii::lower(entry.host_pattern), true) ==
              keys::ListMatch::match) {
        allowed = true;
        break;
      }
    }
    if (!allowed) {
      return no(Code::administratively_prohibited, "not_permitted",
                "cannot reach " + name + ": this key's permitopen allows only " +
                    describe_permits(key.permit_open) + "; " + ask);
    }
  }
  const DirectTarget target = lookup(*host);
  if (!target.exists) {
    return no(Code::connect_failed, "no_endpoint",
              "no internal endpoint serves " + name + " (is its owner's ssh -R " + name +
                  ":443:... tls running?)");
  }
  if (!target.internal) {
    return no(Code::connect_failed, "public_only",
              name +
                  " is a public endpoint, not an internal one: connect to the gateway's TLS "
                  "port instead");
  }
  if (key.permit_open.empty()) {
    const bool own = !target.key_fingerprints.empty() &&
                     std::all_of(target.key_fingerprints.begin(), target.key_fingerprints.end(),
                                 [&](const std::string& fp) { return fp == key_fingerprint; });
    if (!own) {
      return no(Code::administratively_prohibited, "other_key",
                name +
                    " is another key's internal endpoint (a key without permitopen reaches "
                    "only its own); " +
                    ask);
    }
  }
  DirectDecision d;
  d.ok = true;
  d.name = std::move(*host);
  return d;
}

std::string generate_label(std::uint64_t random) {
  // splitmix64's finaliser: callers may pass a counter or a weak seed and still get spread.
  random ^= random >> 30;
  random *= 0xbf58476d1ce4e5b9ULL;
  random ^= random >> 27;
  random *= 0x94d049bb133111ebULL;
  random ^= random >> 31;
  static constexpr std::string_view kLetters = "abcdefghijkmnpqrstuvwxyz";
  static constexpr std::string_view kChars = "abcdefghijkmnpqrstuvwxyz23456789";
  const std::size_t len = 6 + random % 3;
  random /= 3;
  std::string out;
  out.push_back(kLetters[random % kLetters.size()]);
  random /= kLetters.size();
  while (out.size() < len) {
    out.push_back(kChars[random % kChars.size()]);
    random /= kChars.size();
  }
  return out;
}

}  // namespace gw::sshd

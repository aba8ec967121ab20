// authorized_keys line and option parser; see authorized_keys.hpp. Fail closed: anything we do
// not understand rejects the line (OpenSSH auth-options.c does the same). Deliberately no clock,
// no file I/O and no logging here: callers decide what a warning means.
//
// Line grammar (whitespace = space or tab):
//   line    = *ws [options 1*ws] keytype 1*ws base64 [1*ws comment] *ws
//   options = option *("," option)
//   option  = name ["=" DQUOTE *(qchar / "\" DQUOTE) DQUOTE]   ; names case-insensitive
// The options field ends at the first whitespace outside quotes.
#include "keys/authorized_keys.hpp"

#include <openssl/evp.h>

#include <array>
#include <charconv>
#include <chrono>
#include <cstring>
#include <limits>
#include <variant>

#include "common/ascii.hpp"
#include "common/cidr.hpp"
#include "common/printable.hpp"

namespace gw::keys {
namespace {

class KeysCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "gw.keys"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::no_key:
        return "no key on this line";
      case errc::unknown_option:
        return "unknown key option";
      case errc::duplicate_option:
        return "option given more than once";
      case errc::stray_comma:
        return "empty option (stray comma)";
      case errc::missing_value:
        return "option needs a value: name=\"...\"";
      case errc::unquoted_value:
        return "option value must be in double quotes";
      case errc::unterminated_quote:
        return "unterminated double quote";
      case errc::unexpected_value:
        return "option takes no value";
      case errc::bad_permitlisten:
        return "permitlisten must be \"host:port\" with a port number or *";
      case errc::bad_expiry_time:
        return "expiry-time must be \"YYYYMMDD[HHMM[SS]]\" (UTC) and a real date";
      case errc::bad_from:
        return "from must be a comma-separated list of address patterns and CIDRs (a/len with "
               "no bits set past len)";
      case errc::too_many_permitlisten:
        return "too many permitlisten options";
      case errc::bad_permitopen:
        return "permitopen must be \"host:port\" with a port number or *";
      case errc::too_many_permitopen:
        return "too many permitopen options";
      case errc::missing_key_type:
        return "options but no key after them";
      case errc::unsupported_key_type:
        return "unsupported key type (use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa)";
      case errc::missing_key_blob:
        return "key type without key data";
      case errc::bad_base64:
        return "key data is not valid base64";
      case errc::key_type_mismatch:
        return "key data is for a different key type than the line says";
      case errc::malformed_blob:
        return "key data is malformed";
    }
    return "unknown authorized_keys error";
  }
};

constexpr std::array<std::string_view, 5> kKeyTypes = {
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"};

bool is_ws(char c) { return c == ' ' || c == '\t'; }

using ascii::iequals;
using ascii::trim;  // blanks are is_ws() plus the CR of a CRLF file

// A first word that names a key type (ours or one we refuse) rather than options: lets
// `ssh-dss AAAA...` fail as unsupported_key_type instead of unknown_option.
bool looks_like_key_type(std::string_view word) {
  if (word.find_first_of("=,\"") != std::string_view::npos) {
    return false;
  }
  return word.starts_with("ssh-") || word.starts_with("ecdsa-") || word.starts_with("sk-") ||
         word.find("@openssh.com") != std::string_view::npos;
}

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Strict padded base64, as ssh-keygen writes it: non-empty, length a multiple of 4, only the
// alphabet, '=' only as the last one or two characters. OpenSSL decodes; the shape is checked
// here first because EVP_DecodeBlock is laxer (it skips leading and trailing whitespace, and
// returns the padding as zero bytes).
std::optional<std::string> base64_decode(std::string_view in) {
  if (in.empty() || in.size() % 4 != 0 ||
      in.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return std::nullopt;
  }
  const std::size_t pad = in.ends_with("==") ? 2 : in.ends_with('=') ? 1 : 0;
  if (in.substr(0, in.size() - pad).find_first_not_of(kBase64Alphabet) != std::string_view::npos) {
    return std::nullopt;
  }
  std::string out(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0 || static_cast<std::size_t>(n) != out.size()) {
    return std::nullopt;
  }
  out.resize(out.size() - pad);  // EVP_DecodeBlock counts the padding as decoded zero bytes
  return out;
}

// Unpadded base64, as ssh-keygen prints SHA256 fingerprints.
std::string base64_encode_unpadded(const unsigned char* p, std::size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');  // EVP_EncodeBlock adds a NUL
  const int len =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n));
  out.resize(static_cast<std::size_t>(len));
  while (!out.empty() && out.back() == '=') {
    out.pop_back();
  }
  return out;
}

std::string sha256_fingerprint(std::string_view blob) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  // EVP_Digest cannot fail for SHA-256 on in-memory input short of allocation failure; an empty
  // fingerprint then makes the key unfindable by fingerprint, which is the safe outcome.
  if (EVP_Digest(blob.data(), blob.size(), md, &md_len, EVP_sha256(), nullptr) != 1) {
    return {};
  }
  return "SHA256:" + base64_encode_unpadded(md, md_len);
}

// SSH wire reader for the key blob (RFC 4251 string/mpint): bounds-checked, never throws.
class BlobReader {
 public:
  explicit BlobReader(std::string_view b) : b_(b) {}
  bool read_string(std::string_view& out) {
    if (b_.size() < 4) {
      return false;
    }
    const auto* u = reinterpret_cast<const unsigned char*>(b_.data());
    const std::uint32_t len = (std::uint32_t{u[0]} << 24) | (std::uint32_t{u[1]} << 16) |
                              (std::uint32_t{u[2]} << 8) | std::uint32_t{u[3]};
    if (len > b_.size() - 4) {
      return false;
    }
    out = b_.substr(4, len);
    b_.remove_prefix(4 + len);
    return true;
  }
  bool empty() const { return b_.empty(); }

 private:
  std::string_view b_;
};

// Checks the decoded blob against the declared type: RFC 8709 (ed25519), RFC 5656 (ecdsa),
// RFC 4253 (rsa). Shape only; the cryptography is libssh's job at authentication time.
std::optional<errc> check_blob(std::string_view type, std::string_view blob) {
  BlobReader r(blob);
  std::string_view embedded;
  if (!r.read_string(embedded)) {
    return errc::malformed_blob;
  }
  if (embedded != type) {
    return errc::key_type_mismatch;
  }
  if (type == "ssh-ed25519") {
    std::string_view pk;
    if (!r.read_string(pk) || pk.size() != 32 || !r.empty()) {
      return errc::malformed_blob;
    }
    return std::nullopt;
  }
  if (type.starts_with("ecdsa-sha2-")) {
    const std::string_view curve_name = type.substr(std::strlen("ecdsa-sha2-"));
    std::string_view curve;
    std::string_view point;
    if (!r.read_string(curve)) {
      return errc::malformed_blob;
    }
    if (curve != curve_name) {
      return errc::key_type_mismatch;
    }
    const std::size_t field = curve == "nistp256" ? 32 : curve == "nistp384" ? 48 : 66;
    if (!r.read_string(point) || point.size() != 1 + 2 * field || point[0] != 0x04 || !r.empty()) {
      return errc::malformed_blob;
    }
    return std::nullopt;
  }
  // ssh-rsa
  std::string_view e;
  std::string_view n;
  if (!r.read_string(e) || !r.read_string(n) || e.empty() || n.empty() || !r.empty()) {
    return errc::malformed_blob;
  }
  return std::nullopt;
}

std::optional<std::int64_t> parse_expiry(std::string_view v) {
  if (!v.empty() && (v.back() == 'Z' || v.back() == 'z')) {
    v.remove_suffix(1);  // OpenSSH's explicit-UTC marker; we read every time as UTC anyway
  }
  if (v.size() != 8 && v.size() != 12 && v.size() != 14) {
    return std::nullopt;
  }
  for (char c : v) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
  }
  auto num = [&](std::size_t pos, std::size_t len) {
    unsigned x = 0;
    for (std::size_t i = 0; i < len; ++i) {
      x = x * 10 + static_cast<unsigned>(v[pos + i] - '0');
    }
    return x;
  };
  namespace chr = std::chrono;
  // year_month_day::ok() is the calendar check: month 1-12, the day within that month, and
  // February 29 only in leap years.
  const chr::year_month_day date{chr::year{static_cast<int>(num(0, 4))}, chr::month{num(4, 2)},
                                 chr::day{num(6, 2)}};
  const unsigned hour = v.size() >= 12 ? num(8, 2) : 0;
  const unsigned minute = v.size() >= 12 ? num(10, 2) : 0;
  const unsigned second = v.size() == 14 ? num(12, 2) : 0;
  if (!date.ok() || hour > 23 || minute > 59 || second > 59) {
    return std::nullopt;
  }
  const chr::sys_seconds t =
      chr::sys_days{date} + chr::hours{hour} + chr::minutes{minute} + chr::seconds{second};
  return t.time_since_epoch().count();
}

// A parse failure with a detail for operators ("unknown key option \"foo\"").
struct Failure {
  errc code;
  std::string detail;
};

std::optional<PermitListen> parse_permitlisten(std::string_view v) {
  const std::size_t colon = v.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return std::nullopt;  // port-only is refused: OpenSSH reads it as "any host"
  }
  PermitListen pl;
  pl.host_pattern = std::string(v.substr(0, colon));
  const std::string_view port = v.substr(colon + 1);
  if (port == "*") {
    return pl;
  }
  std::uint32_t n = 0;
  if (port.empty() || port.size() > 5) {
    return std::nullopt;
  }
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  if (ec != std::errc{} || end != port.data() + port.size() || n > 65535) {
    return std::nullopt;
  }
  pl.port = static_cast<std::uint16_t>(n);
  return pl;
}

/// One from= element (`!` allowed). An element with a '/' is a CIDR and must be a valid one:
/// OpenSSH fails the whole check on a bad or inconsistent mask (addr_match_list returns -2),
/// and an unusable `!10.0.0.0/99` would otherwise silently stop excluding anyone. Anything
/// else is a glob over the client's address text and cannot be malformed.
bool from_entry_valid(std::string_view item) {
  if (item.front() == '!') {
    item.remove_prefix(1);
  }
  if (item.empty()) {
    return false;
  }
  if (item.find('/') == std::string_view::npos) {
    return true;
  }
  const auto cidr = gw::Cidr::parse(item);
  return cidr && !cidr->has_host_bits();
}

std::optional<Failure> parse_options_into(std::string_view s, KeyOptions& out) {
  bool seen_from = false;
  bool seen_expiry = false;
  std::size_t pos = 0;
  for (;;) {
    if (pos >= s.size() || s[pos] == ',') {
      return Failure{errc::stray_comma, {}};
    }
    const std::size_t name_end = s.find_first_of("=,", pos);
    const std::string_view name =
        s.substr(pos, name_end == std::string_view::npos ? s.size() - pos : name_end - pos);
    pos += name.size();
    std::optional<std::string> value;
    if (pos < s.size() && s[pos] == '=') {
      ++pos;
      if (pos >= s.size() || s[pos] != '"') {
        return Failure{errc::unquoted_value, std::string(name)};
      }
      ++pos;
      std::string v;
      bool closed = false;
      while (pos < s.size()) {
        const char c = s[pos++];
        if (c == '\\' && pos < s.size() && s[pos] == '"') {
          v.push_back('"');
          ++pos;
        } else if (c == '"') {
          closed = true;
          break;
        } else {
          v.push_back(c);
        }
      }
      if (!closed) {
        return Failure{errc::unterminated_quote, std::string(name)};
      }
      value = std::move(v);
    }

    const bool flag = iequals(name, "restrict") || iequals(name, "no-port-forwarding") ||
                      iequals(name, "port-forwarding") || iequals(name, "no-pty") ||
                      iequals(name, "pty") || iequals(name, "no-agent-forwarding") ||
                      iequals(name, "agent-forwarding") || iequals(name, "no-x11-forwarding") ||
                      iequals(name, "x11-forwarding") || iequals(name, "no-user-rc") ||
                      iequals(name, "user-rc");
    if (flag) {
      if (value) {
        return Failure{errc::unexpected_value, std::string(name)};
      }
      if (iequals(name, "restrict")) {
        // Like OpenSSH: clears every permission; later options may re-enable some.
        out.restricted = true;
        out.port_forwarding = false;
      } else if (iequals(name, "no-port-forwarding")) {
        out.port_forwarding = false;
      } else if (iequals(name, "port-forwarding")) {
        out.port_forwarding = true;
      }
      // The pty/agent/X11/user-rc family restricts sessions we never offer: accepted, ignored.
    } else if (iequals(name, "permitlisten") || iequals(name, "permitopen")) {
      // One grammar for both, as in OpenSSH's handle_permit(): "host:port", port a number or
      // `*`. permitopen only records the list: like OpenSSH, it does not undo restrict or
      // no-port-forwarding (port-forwarding after restrict does).
      const bool listen = iequals(name, "permitlisten");
      if (!value) {
        return Failure{errc::missing_value, std::string(name)};
      }
      auto pl = parse_permitlisten(*value);
      if (!pl) {
        return Failure{listen ? errc::bad_permitlisten : errc::bad_permitopen, *value};
      }
      auto& list = listen ? out.permit_listen : out.permit_open;
      if (list.size() >= kMaxPermitListen) {
        return Failure{listen ? errc::too_many_permitlisten : errc::too_many_permitopen, {}};
      }
      list.push_back(std::move(*pl));
    } else if (iequals(name, "from")) {
      if (!value) {
        return Failure{errc::missing_value, std::string(name)};
      }
      if (seen_from) {
        return Failure{errc::duplicate_option, std::string(name)};
      }
      seen_from = true;
      for (const std::string_view item : ascii::split_commas(*value)) {
        if (item.empty() || !from_entry_valid(item)) {
          return Failure{errc::bad_from, *value};
        }
        out.from.emplace_back(item);
      }
    } else if (iequals(name, "expiry-time")) {
      if (!value) {
        return Failure{errc::missing_value, std::string(name)};
      }
      if (seen_expiry) {
        return Failure{errc::duplicate_option, std::string(name)};
      }
      seen_expiry = true;
      const auto t = parse_expiry(*value);
      if (!t) {
        return Failure{errc::bad_expiry_time, *value};
      }
      out.expiry_unix = *t;
    } else {
      return Failure{errc::unknown_option, std::string(name)};
    }

    if (pos == s.size()) {
      return std::nullopt;
    }
    if (s[pos] != ',') {
      // Text glued to a closing quote (`from="a"x`): as in OpenSSH, not an option we know.
      return Failure{errc::unknown_option, std::string(s.substr(pos))};
    }
    ++pos;
  }
}

// The options field runs to the first whitespace outside double quotes.
std::optional<std::size_t> options_end(std::string_view line) {
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted && c == '\\' && i + 1 < line.size() && line[i + 1] == '"') {
      ++i;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (!quoted && is_ws(c)) {
      return i;
    }
  }
  if (quoted) {
    return std::nullopt;
  }
  return line.size();
}

std::string_view next_word(std::string_view& rest) {
  while (!rest.empty() && is_ws(rest.front())) {
    rest.remove_prefix(1);
  }
  std::size_t n = 0;
  while (n < rest.size() && !is_ws(rest[n])) {
    ++n;
  }
  const std::string_view w = rest.substr(0, n);
  rest.remove_prefix(n);
  return w;
}

std::variant<AuthorizedKey, Failure> parse_line(std::string_view line) {
  line = trim(line);
  if (line.empty() || line.front() == '#') {
    return Failure{errc::no_key, {}};
  }
  AuthorizedKey key;
  std::string_view rest = line;
  std::string_view first = line.substr(0, line.find_first_of(" \t"));
  if (!looks_like_key_type(first)) {
    const auto end = options_end(line);
    if (!end) {
      return Failure{errc::unterminated_quote, {}};
    }
    if (auto f = parse_options_into(line.substr(0, *end), key.options)) {
      return *f;
    }
    rest = line.substr(*end);
  }
  const std::string_view type = next_word(rest);
  if (type.empty()) {
    return Failure{errc::missing_key_type, {}};
  }
  bool supported = false;
  for (std::string_view t : kKeyTypes) {
    supported = supported || t == type;
  }
  if (!supported) {
    return Failure{errc::unsupported_key_type, std::string(type)};
  }
  const std::string_view b64 = next_word(rest);
  if (b64.empty()) {
    return Failure{errc::missing_key_blob, {}};
  }
  const auto blob = base64_decode(b64);
  if (!blob) {
    return Failure{errc::bad_base64, {}};
  }
  if (auto e = check_blob(type, *blob)) {
    return Failure{*e, {}};
  }
  key.type = std::string(type);
  key.blob_base64 = std::string(b64);
  key.comment = std::string(trim(rest));
  key.fingerprint = sha256_fingerprint(*blob);
  return key;
}

}  // namespace

const std::error_category& keys_category() noexcept {
  static const KeysCategory category;
  return category;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), keys_category()}; }

gw::Expected<AuthorizedKey> parse_authorized_key_line(std::string_view line) {
  auto r = parse_line(line);
  if (auto* f = std::get_if<Failure>(&r)) {
    return gw::Unexpected{f->code};
  }
  return std::get<AuthorizedKey>(std::move(r));
}

gw::Expected<KeyOptions> parse_key_options(std::string_view options) {
  KeyOptions out;
  if (auto f = parse_options_into(options, out)) {
    return gw::Unexpected{f->code};
  }
  return out;
}

bool is_expired(const KeyOptions& options, std::int64_t now_unix) noexcept {
  return options.expiry_unix && now_unix >= *options.expiry_unix;
}

KeyFileResult parse_authorized_keys(std::string_view content, std::string_view file_name) {
  KeyFileResult result;
  std::size_t line_no = 0;
  while (!content.empty()) {
    ++line_no;
    const std::size_t nl = content.find('\n');
    const std::string_view line = content.substr(0, nl);
    content.remove_prefix(nl == std::string_view::npos ? content.size() : nl + 1);
    const std::string_view t = trim(line);
    if (t.empty() || t.front() == '#') {
      continue;
    }
    std::string loc = std::string(file_name) + ":" + std::to_string(line_no);
    auto r = parse_line(t);
    if (auto* f = std::get_if<Failure>(&r)) {
      std::string w = loc + ": line skipped: " + make_error_code(f->code).message();
      if (!f->detail.empty()) {
        w += " (\"" + gw::printable(f->detail, 60) + "\")";
      }
      result.warnings.push_back(std::move(w));
      continue;
    }
    auto& key = std::get<AuthorizedKey>(r);
    key.loc = std::move(loc);
    result.keys.push_back(std::move(key));
  }
  return result;
}

}  // namespace gw::keys

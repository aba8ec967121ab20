// Hostname: a DNS name normalised once at ingress (lowercase ASCII, no trailing dot, LDH labels,
// at most 253 bytes, no IP literals), optionally a leftmost-label wildcard `*.example.com`.
// Deliberately doesn't do IDNA (Unicode names must arrive as xn-- A-labels), DNS lookups or
// public-suffix checks: it is a pure syntax gate shared by the SSH and TLS sides.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

#include "common/expected.hpp"

namespace gw::tunnel {

/// Why a string is not a Hostname. Messages are user-facing and may be shown verbatim.
/// Named hostname_errc (not errc) so the tunnel folder's other parsers can own `errc`.
enum class hostname_errc {
  empty = 1,
  too_long,
  empty_label,
  label_too_long,
  bad_character,
  label_hyphen,
  ip_literal,
  wildcard_position,
  wildcard_not_allowed,
  all_numeric_tld,
};

const std::error_category& hostname_category() noexcept;
std::error_code make_error_code(hostname_errc e) noexcept;

class Hostname {
 public:
  static constexpr std::size_t kMaxLength = 253;  // RFC 1035 presentation form, no final dot
  static constexpr std::size_t kMaxLabel = 63;    // RFC 1035 label limit

  /// Parses and normalises `raw`: lowercases ASCII and drops one trailing dot. Refuses with
  /// hostname_errc::empty, too_long (>253 after normalising), empty_label, label_too_long (>63),
  /// bad_character (anything but letters, digits, '-', including all non-ASCII), label_hyphen,
  /// ip_literal (anything with ':' or brackets, or all labels numeric like 10.0.0.1 / 127.1 /
  /// 0x7f.1), all_numeric_tld (last label all digits), wildcard_position (`*` anywhere but as the
  /// whole leftmost label of a name with at least one more label) and wildcard_not_allowed (a
  /// well-placed `*.` when `allow_wildcard` is false).
  static gw::Expected<Hostname> parse(std::string_view raw, bool allow_wildcard = true);

  const std::string& str() const noexcept { return name_; }
  bool is_wildcard() const noexcept { return name_.size() > 2 && name_[0] == '*'; }
  /// For `*.a.b` returns `a.b`; for a plain name returns the whole name.
  std::string_view suffix() const noexcept;
  /// True if this name has all of `domain`'s labels plus at least one more on the left (a
  /// strict subdomain). Compared label-wise, so `xa.b` is not under `a.b`. A wildcard's `*`
  /// counts as a label (`*.a.b` is under `a.b`); a wildcard `domain` has nothing under it.
  bool is_under(const Hostname& domain) const noexcept;

  friend bool operator==(const Hostname&, const Hostname&) = default;
  friend auto operator<=>(const Hostname&, const Hostname&) = default;

 private:
  explicit Hostname(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

}  // namespace gw::tunnel

GW_DECLARE_ERRC(gw::tunnel::hostname_errc)

template <>
struct std::hash<gw::tunnel::Hostname> {
  std::size_t operator()(const gw::tunnel::Hostname& h) const noexcept {
    return std::hash<std::string>{}(h.str());
  }
};

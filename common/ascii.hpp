// ASCII string helpers the parsers share: case folding, case-insensitive comparison, trimming
// and comma-list splitting. Every protocol we parse (DNS names, OpenSSH options and patterns,
// HTTP header names) is case-insensitive in ASCII only, so these never consult the locale and
// never touch bytes >= 0x80: `<cctype>` and std::tolower would fold Latin-1 letters under some
// locales and are undefined for negative chars. Deliberately no Unicode and no allocation
// except where a new string is the result (lower()).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace gw::ascii {

/// 'A'..'Z' become 'a'..'z'; every other byte is returned unchanged.
constexpr char lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

/// `s` with 'A'..'Z' folded to lower case.
inline std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = lower(c);
  }
  return out;
}

/// True when `a` and `b` are equal after folding ASCII letters on both sides. (One copy this
/// replaced folded only `a`, which is right only while `b` is a lower-case literal.)
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

/// Spaces, tabs, and the CR a CRLF line ending leaves behind.
inline constexpr std::string_view kBlank = " \t\r";

/// `s` without leading and trailing bytes from `set`.
constexpr std::string_view trim(std::string_view s, std::string_view set = kBlank) noexcept {
  const std::size_t begin = s.find_first_not_of(set);
  if (begin == std::string_view::npos) {
    return {};
  }
  return s.substr(begin, s.find_last_not_of(set) - begin + 1);
}

/// The elements of a comma list, in order. Empty elements are kept ("a,,b" has three, "" has
/// one) so callers can refuse stray commas instead of silently skipping them. The views point
/// into `s`.
inline std::vector<std::string_view> split_commas(std::string_view s) {
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

}  // namespace gw::ascii

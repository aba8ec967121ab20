// Makes peer-supplied strings safe for logs: escapes non-printable bytes and truncates.
// Deliberately not a general escaping library: output is for humans reading logs only.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace gw {

/// Returns `s` with bytes outside printable ASCII as \xNN and `"`/`\` escaped, cut to
/// `max` input bytes (a trailing "..." marks the cut).
inline std::string printable(std::string_view s, std::size_t max = 100) {
  std::string out;
  const std::size_t n = s.size() < max ? s.size() : max;
  out.reserve(n + 8);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > max) {
    out += "...";
  }
  return out;
}

}  // namespace gw

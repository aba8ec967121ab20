// The JSON string escaper and object writer; see json.hpp.
// Why our own writer and not a JSON library (Boost.JSON is at hand; the tests parse with it):
// what we write holds arbitrary bytes from peers (ssh user names, SNI, key comments), and
// every line must still be valid JSON. A library either throws on invalid UTF-8 or passes it
// through, so it would need this same sanitising (U+FFFD per bad byte, C1 and U+2028/2029
// escaped, cut at a character boundary) in front of it; the writer around it is a few lines.
#include "app/json.hpp"

#include <cstdio>

namespace gw::app {
namespace {

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 if there is none
// (RFC 3629 table: no overlongs, no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xbf) {
    return i + k < s.size() && byte(k) >= lo && byte(k) <= hi;
  };
  const unsigned b0 = byte(0);
  if (b0 < 0x80) {
    return 1;
  }
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    return cont(1) ? 2 : 0;
  }
  if (b0 >= 0xe0 && b0 <= 0xef) {
    const unsigned lo = b0 == 0xe0 ? 0xa0 : 0x80;
    const unsigned hi = b0 == 0xed ? 0x9f : 0xbf;
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    const unsigned lo = b0 == 0xf0 ? 0x90 : 0x80;
    const unsigned hi = b0 == 0xf4 ? 0x8f : 0xbf;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

void append_u_escape(std::string& out, unsigned cp) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\u%04x", cp);
  out += buf;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s, std::size_t max) {
  out += '"';
  std::size_t i = 0;
  bool cut = false;
  while (i < s.size()) {
    const std::size_t len = utf8_sequence_length(s, i);
    if (i + (len == 0 ? 1 : len) > max) {
      cut = true;
      break;
    }
    if (len == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD for this one byte; resynchronise on the next
      ++i;
      continue;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (len == 1) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            append_u_escape(out, c);
          } else {
            out += static_cast<char>(c);
          }
      }
    } else if (len == 2 && c == 0xc2 && static_cast<unsigned char>(s[i + 1]) < 0xa0) {
      // C1 controls U+0080..U+009F (0x9b is a terminal CSI): escape, don't pass through.
      append_u_escape(out, static_cast<unsigned char>(s[i + 1]));
    } else if (len == 3 && c == 0xe2 && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(s[i + 2]) == 0xa8 ||
                static_cast<unsigned char>(s[i + 2]) == 0xa9)) {
      // U+2028/U+2029: valid JSON, but line breaks for JavaScript and some viewers.
      append_u_escape(out, 0x2000 + static_cast<unsigned char>(s[i + 2]) - 0x80);
    } else {
      out.append(s.data() + i, len);
    }
    i += len;
  }
  if (cut) {
    out += "...";
  }
  out += '"';
}

}  // namespace gw::app

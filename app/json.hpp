// JSON string literals for everything app/ writes (events, the admin API, `keys list --json`):
// one escaper, so every output is valid JSON whatever bytes peers or key comments hold.
// Deliberately no JSON object model: callers write their few fixed shapes directly.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace gw::app {

/// Appends `s` to `out` as a JSON string literal (with the quotes). Valid UTF-8 passes through;
/// each byte of an invalid sequence becomes U+FFFD; `"` `\` and control characters (C0, DEL,
/// C1, U+2028/2029) are escaped, so a line is always valid JSON and safe to print on a
/// terminal. Strings longer than `max` bytes are cut at a character boundary and end in "...".
void append_json_string(std::string& out, std::string_view s, std::size_t max = 1024);

}  // namespace gw::app

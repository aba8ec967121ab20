// Parser for OpenSSH authorized_keys lines: `[options] keytype base64 [comment]`. Produces plain
// structs; parsing and authorisation are separate (expiry, from= and permitlisten are applied
// by the callers that know the clock, the peer address and the requested name).
// Deliberately doesn't support certificates (cert-authority, principals=), command=, environment=,
// tunnel= or security-key types: an option or key type we don't implement rejects
// the line instead of being silently ignored, except OpenSSH's harmless session restrictions
// (no-pty, no-agent-forwarding, no-X11-forwarding, no-user-rc) which we have nothing to apply to.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/expected.hpp"

namespace gw::keys {

/// Why an authorized_keys line was rejected. Messages are for operators' warnings.
enum class errc {
  no_key = 1,             // blank or comment line where a key was required
  unknown_option,         // an option name we don't implement
  duplicate_option,       // a single-valued option (from, expiry-time) given twice
  stray_comma,            // leading, trailing or doubled comma in the options
  missing_value,          // `permitlisten` etc. without `="..."`
  unquoted_value,         // `opt=value` without the double quotes OpenSSH requires
  unterminated_quote,     // `opt="...` running to the end of the line
  unexpected_value,       // a flag such as `restrict="x"`
  bad_permitlisten,       // not `host:port`, empty host, port not 1..65535 or `*`
  bad_expiry_time,        // not YYYYMMDD[HHMM[SS]][Z] or not a real date/time
  bad_from,               // empty pattern list or empty element
  too_many_permitlisten,  // more than kMaxPermitListen entries
  missing_key_type,       // options and nothing after them
  unsupported_key_type,   // a key type outside the list below (ssh-dss, sk-*, certificates)
  missing_key_blob,       // key type without base64
  bad_base64,             // not canonical padded base64
  key_type_mismatch,      // the blob's embedded type (or ECDSA curve) differs from the declared one
  malformed_blob,         // the blob's structure is wrong for its type
  bad_permitopen,         // as bad_permitlisten, for permitopen
  too_many_permitopen,    // more than kMaxPermitListen permitopen entries
};

const std::error_category& keys_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

/// Caps a single line's permitlisten list, like OpenSSH's SSH_AUTHOPT_PERMIT_MAX.
inline constexpr std::size_t kMaxPermitListen = 4096;

struct PermitListen {
  std::string host_pattern;           // as written; a pattern list, matched case-insensitively
  std::optional<std::uint16_t> port;  // nullopt = `*`
};

struct KeyOptions {
  std::vector<PermitListen> permit_listen;
  /// Internal endpoints the key may reach (ssh -L / -W); empty = only its own. Same grammar.
  std::vector<PermitListen> permit_open;
  std::vector<std::string> from;            // patterns, one per list element, `!` kept
  std::optional<std::int64_t> expiry_unix;  // UTC seconds; the key is invalid from then on
  bool port_forwarding = true;
  bool restricted = false;
};

struct AuthorizedKey {
  std::string type;  // ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa
  std::string blob_base64;
  std::string comment;      // display name; may be empty
  std::string fingerprint;  // "SHA256:" + unpadded base64, as `ssh-keygen -lf` prints
  KeyOptions options;
  std::string loc;  // "file:line", filled by parse_authorized_keys
};

/// Parses one line (no newline). Leading/trailing whitespace and a trailing '\r' are ignored.
/// Returns any errc above; errc::no_key for blank and `#` comment lines. `loc` is left empty.
gw::Expected<AuthorizedKey> parse_authorized_key_line(std::string_view line);

/// Parses only an options string (`restrict,permitlisten="a:443"`); for `snigate keys add` and
/// tests. Returns the option errc values above.
gw::Expected<KeyOptions> parse_key_options(std::string_view options);

/// True once `now_unix` has reached the key's expiry-time (false without one).
bool is_expired(const KeyOptions& options, std::int64_t now_unix) noexcept;

struct KeyFileResult {
  std::vector<AuthorizedKey> keys;
  std::vector<std::string> warnings;  // "file:line: reason"
};

/// Parses a whole file: blank and comment lines are skipped silently, a bad line is skipped
/// with a warning and the rest loads. Never fails.
KeyFileResult parse_authorized_keys(std::string_view content, std::string_view file_name);

}  // namespace gw::keys

GW_DECLARE_ERRC(gw::keys::errc)

// The pure, incremental TLS ClientHello parser the router peeks with: given every byte read
// from a public connection so far, it says "complete" (with the SNI host_name and ALPN list),
// "need more" (and how much) or "invalid" (with a specific errc and the alert to send).
// It reassembles a hello split over several TLS records and arbitrary TCP segments.
// Deliberately no I/O, no logging, no hostname validation (tunnel::Hostname does that) and no
// interpretation of other extensions: the gateway passes the bytes through untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "common/expected.hpp"

namespace gw::sni {

/// Why bytes are not a ClientHello we can route. Each bad input has its own value so that
/// counters and tests can tell them apart; alert_for() maps them to TLS alerts.
enum class errc {
  not_tls = 1,                    ///< first bytes are not a TLS handshake record (HTTP, SSH, noise)
  sslv2_client_hello,             ///< a legacy SSLv2-framed hello
  unsupported_record_version,     ///< record version 3.x other than 0x0301..0x0303
  record_too_large,               ///< record length over kMaxRecordPayloadBytes
  empty_record,                   ///< zero-length handshake record (RFC 8446 5.1 forbids it)
  record_interleaved,             ///< a non-handshake record before the hello is complete
  not_client_hello,               ///< handshake msg_type is not client_hello (1)
  client_hello_too_large,         ///< handshake message length over kMaxClientHelloBytes
  extra_handshake_data,           ///< handshake bytes after the hello in its last record
  truncated_client_hello,         ///< too short for legacy_version and random
  truncated_session_id,           ///< session id length runs past the hello
  malformed_session_id,           ///< session id longer than 32 bytes
  truncated_cipher_suites,        ///< cipher suites length runs past the hello
  malformed_cipher_suites,        ///< cipher suites empty or of odd length
  truncated_compression_methods,  ///< compression methods length runs past the hello
  malformed_compression_methods,  ///< no compression method
  truncated_extensions,           ///< extensions length missing or runs past the hello
  truncated_extension,            ///< an extension header or body runs past the extension block
  duplicate_extension,            ///< the same extension type twice
  malformed_server_name,  ///< server_name list length disagrees with its extension, or empty
  truncated_server_name,  ///< a server_name entry runs past its list
  duplicate_server_name,  ///< two host_name entries
  bad_server_name,        ///< host_name empty, too long, or bytes no hostname has
  malformed_alpn,         ///< ALPN list length disagrees, empty list or empty protocol
  trailing_bytes,         ///< bytes after the extension block inside the hello
};

const std::error_category& client_hello_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

enum class ParseStatus { complete, need_more, invalid };

struct ClientHelloResult {
  ParseStatus status = ParseStatus::need_more;
  std::error_code error;  ///< set iff status == invalid
  /// For complete: bytes of the records that made up the hello (the input may go on with
  /// later records, e.g. 0-RTT data; they are not ours to judge).
  std::size_t consumed = 0;
  /// For need_more: the total input length below which calling again cannot complete the
  /// hello (a lower bound). Honouring it keeps re-parsing from going quadratic; an error in
  /// bytes before that point is still found, just not earlier.
  std::size_t need_at_least = 0;
  /// The host_name entry of server_name, exactly as sent (the caller normalises it).
  std::optional<std::string> server_name;
  /// application_layer_protocol_negotiation names as sent, in order.
  std::vector<std::string> alpn;
};

/// Parses the ClientHello at the start of `input`, which holds everything read from the
/// connection so far. Never throws, never reads past `input`. Returns need_more with
/// need_at_least > input.size() while bytes are missing; complete with consumed and the
/// names; or invalid with one of: not_tls, sslv2_client_hello, unsupported_record_version,
/// record_too_large, empty_record, record_interleaved, not_client_hello,
/// client_hello_too_large (decided from the 4-byte handshake header alone),
/// extra_handshake_data, truncated_* / malformed_* of the hello's fields,
/// duplicate_extension, duplicate_server_name, bad_server_name, trailing_bytes.
ClientHelloResult parse_client_hello(std::span<const std::byte> input);

/// The alert the router sends for a parse failure (DESIGN section 4): nullopt for not_tls and
/// sslv2_client_hello (close without an alert: the peer doesn't speak TLS), record_overflow
/// for record_too_large, protocol_version for unsupported_record_version, decode_error for
/// every other errc of this category (client_hello_too_large included). nullopt for codes of
/// other categories.
std::optional<std::uint8_t> alert_for(std::error_code error) noexcept;

}  // namespace gw::sni

GW_DECLARE_ERRC(gw::sni::errc)

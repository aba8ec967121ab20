// TLS alert descriptions the router sends and the 7-byte fatal alert record that carries
// one. Pure (no sockets): tunnel/tls_alert.hpp does the sending. Deliberately only the
// alerts DESIGN.md section 4 names, plus protocol_version for pre-TLS-1.0 records and
// unexpected_message for the record guard (common/tls_record_guard.hpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace gw {

inline constexpr std::uint8_t kAlertUnexpectedMessage = 10;  ///< a record type no handshake sends
inline constexpr std::uint8_t kAlertRecordOverflow = 22;     ///< a record longer than allowed
inline constexpr std::uint8_t kAlertDecodeError = 50;        ///< malformed or over-cap hello
inline constexpr std::uint8_t kAlertProtocolVersion = 70;    ///< SSL 3.0 or unknown version
inline constexpr std::uint8_t kAlertInternalError = 80;      ///< upstream refused the channel
inline constexpr std::uint8_t kAlertUnrecognizedName = 112;  ///< no SNI, or no route for it

/// A fatal alert record: content type 21, legacy_record_version 0x0303 (what TLS 1.3 peers
/// expect before a ServerHello), length 2, level 2 (fatal), `description`.
constexpr std::array<std::byte, 7> make_alert(std::uint8_t description) noexcept {
  return {std::byte{21}, std::byte{3}, std::byte{3},          std::byte{0},
          std::byte{2},  std::byte{2}, std::byte{description}};
}

}  // namespace gw

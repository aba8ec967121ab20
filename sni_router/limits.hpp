// Named limits of the public TLS side, each with the reason it has the value it has.
// Deliberately only numbers: the code that enforces a limit lives next to its user, and the
// run-time configurable ones (timeouts) are defaults that the CLI may override.
#pragma once

#include <chrono>
#include <cstddef>

namespace gw::sni {

/// Handshake-message cap our users are promised (DESIGN section 4): big enough for
/// post-quantum key shares and long extension lists, small enough to bound memory per peek.
inline constexpr std::size_t kMaxClientHelloBytes = 64 * 1024;

/// TLSPlaintext fragments are at most 2^14 bytes (RFC 8446 5.1); we tolerate the TLS 1.2
/// ciphertext bound (2^14 + 2048, RFC 5246 6.2.3) because the upstream, not the gateway,
/// is the judge of exact record sizes. Longer is not TLS we can route: record_overflow.
inline constexpr std::size_t kMaxRecordPayloadBytes = (1u << 14) + 2048;

/// Size of a TLS record header: type u8, legacy_record_version u16, length u16.
inline constexpr std::size_t kRecordHeaderBytes = 5;

/// Size of a handshake message header: msg_type u8, length u24.
inline constexpr std::size_t kHandshakeHeaderBytes = 4;

/// RFC 8446 4.1.2: legacy_session_id is at most 32 bytes.
inline constexpr std::size_t kMaxSessionIdBytes = 32;

/// A DNS name is at most 255 bytes on the wire (RFC 1035 2.3.4). The parser refuses only
/// names that cannot be hostnames at all; tunnel::Hostname applies the exact 253 rule.
inline constexpr std::size_t kMaxServerNameBytes = 255;

/// How long a client may take to send its ClientHello (DESIGN section 4): ample for a
/// slow mobile link, short enough that idle peeks can't pile up.
inline constexpr std::chrono::seconds kClientHelloTimeout{3};

}  // namespace gw::sni

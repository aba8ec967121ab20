// TlsRecordGuard: the record-layer checks a passthrough gateway can still make, on the
// client -> upstream bytes, until the client's handshake is over (docs/security.md).
//
// It reads only the 5-byte record headers (type u8, legacy_record_version u16, length u16)
// and skips the bodies, so a record split over any number of reads costs nothing extra. It
// refuses, before the handshake completes:
//   - a record longer than 2^14 + 2048 bytes (the TLSCiphertext bound of RFC 5246 6.2.3, the
//     most any TLS version allows; RFC 8446 5.2 is tighter): record_overflow (alert 22);
//   - a content type other than 20 change_cipher_spec, 21 alert, 22 handshake, 23
//     application_data: unexpected_message (alert 10, RFC 8446 5: "If a TLS implementation
//     receives an unexpected record type, it MUST terminate the connection with an
//     unexpected_message alert"). 24 heartbeat (RFC 6520) is refused too: no handshake needs
//     it, RFC 6520 3 says it SHOULD NOT be sent during a handshake, and a pre-handshake
//     heartbeat is exactly the Heartbleed probe.
// The first application_data header (TLS 1.3: the client's encrypted Finished; TLS 1.2: its
// first data after Finished; or 0-RTT early data) ends the handshake: once that header is
// checked the guard is done and the caller stops feeding it, so the bulk path does no
// per-record work at all. Pure: no sockets, no clock (the bridge owns the 60 s deadline).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace gw {

class TlsRecordGuard {
 public:
  enum class Verdict {
    watching,  ///< all good so far, the handshake goes on: feed the next bytes
    done,      ///< the client's first application_data record: stop feeding
    oversize,  ///< a record over kMaxRecordBytes: send record_overflow
    bad_type,  ///< a content type no handshake sends: send unexpected_message
  };

  /// Longest record body any TLS version allows (RFC 5246 6.2.3: 2^14 + 2048).
  static constexpr std::size_t kMaxRecordBytes = (1u << 14) + 2048;

  /// The next bytes of the stream, in order. Once the verdict is anything but watching it
  /// stays so and further bytes are ignored.
  Verdict feed(std::span<const std::byte> bytes) noexcept;

  Verdict verdict() const noexcept { return verdict_; }
  /// Whole record headers checked so far (for logs and tests).
  std::uint64_t records() const noexcept { return records_; }
  /// The offending header's type and length, once refused (for the log line).
  std::uint8_t last_type() const noexcept { return static_cast<std::uint8_t>(header_[0]); }
  std::size_t last_length() const noexcept { return last_length_; }

  /// The alert a refusal is answered with: 22 record_overflow, 10 unexpected_message; 0 else.
  static std::uint8_t alert_for(Verdict v) noexcept;
  /// The close reason of a refusal (docs/events.md); "" else.
  static const char* reason_for(Verdict v) noexcept;

 private:
  Verdict check_header() noexcept;

  Verdict verdict_ = Verdict::watching;
  std::array<std::byte, 5> header_{};
  std::size_t header_have_ = 0;  ///< header bytes collected (0..5)
  std::size_t body_left_ = 0;    ///< body bytes still to skip before the next header
  std::size_t last_length_ = 0;
  std::uint64_t records_ = 0;
};

}  // namespace gw

// The incremental ClientHello parser; see client_hello.hpp. Deliberately re-parses from the
// first byte on every call (no hidden state between calls): need_at_least is what keeps a
// caller from doing that more often than it can pay off.
#include "sni_router/client_hello.hpp"

#include <algorithm>
#include <array>
#include <bitset>
#include <string_view>

#include "common/byte_reader.hpp"
#include "common/tls_alert.hpp"
#include "sni_router/limits.hpp"

namespace gw::sni {
namespace {

constexpr std::uint8_t kContentHandshake = 22;
constexpr std::uint8_t kHandshakeClientHello = 1;
constexpr std::uint16_t kExtServerName = 0;
constexpr std::uint16_t kExtAlpn = 16;
constexpr std::uint8_t kNameTypeHostName = 0;
constexpr std::size_t kVersionAndRandomBytes = 2 + 32;

class ClientHelloCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "gw.sni.client_hello"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::not_tls:
        return "not a TLS handshake";
      case errc::sslv2_client_hello:
        return "SSLv2 ClientHello";
      case errc::unsupported_record_version:
        return "unsupported TLS record version";
      case errc::record_too_large:
        return "TLS record too large";
      case errc::empty_record:
        return "empty handshake record";
      case errc::record_interleaved:
        return "non-handshake record inside the ClientHello";
      case errc::not_client_hello:
        return "handshake message is not a ClientHello";
      case errc::client_hello_too_large:
        return "ClientHello larger than 64 KiB";
      case errc::extra_handshake_data:
        return "handshake data after the ClientHello";
      case errc::truncated_client_hello:
        return "ClientHello too short";
      case errc::truncated_session_id:
        return "truncated session id";
      case errc::malformed_session_id:
        return "session id longer than 32 bytes";
      case errc::truncated_cipher_suites:
        return "truncated cipher suites";
      case errc::malformed_cipher_suites:
        return "empty or odd-length cipher suites";
      case errc::truncated_compression_methods:
        return "truncated compression methods";
      case errc::malformed_compression_methods:
        return "no compression methods";
      case errc::truncated_extensions:
        return "truncated extensions";
      case errc::truncated_extension:
        return "extension runs past the extension block";
      case errc::duplicate_extension:
        return "duplicate extension";
      case errc::malformed_server_name:
        return "malformed server_name extension";
      case errc::truncated_server_name:
        return "truncated server_name entry";
      case errc::duplicate_server_name:
        return "more than one host_name";
      case errc::bad_server_name:
        return "server name is not a hostname";
      case errc::malformed_alpn:
        return "malformed ALPN extension";
      case errc::trailing_bytes:
        return "bytes after the extensions";
    }
    return "unknown ClientHello error";
  }
};

ClientHelloResult invalid(errc e) {
  ClientHelloResult r;
  r.status = ParseStatus::invalid;
  r.error = make_error_code(e);
  return r;
}

ClientHelloResult need_more(std::size_t at_least) {
  ClientHelloResult r;
  r.status = ParseStatus::need_more;
  r.need_at_least = at_least;
  return r;
}

/// Judges a record header from its first byte on, so that HTTP, SSH and noise are refused
/// without waiting for five bytes. `header` holds the 0 to 5 header bytes received.
std::optional<errc> check_record_header(std::span<const std::byte> header, bool first_record) {
  ByteReader r(header);
  std::uint8_t type = 0;
  if (!r.read_u8(type)) {
    return std::nullopt;
  }
  if (type != kContentHandshake) {
    if (!first_record) {
      return errc::record_interleaved;
    }
    if ((type & 0x80) == 0) {
      return errc::not_tls;
    }
    // SSLv2 framing: a 15-bit length with the top bit set, then msg_type 1 (CLIENT-HELLO).
    std::uint8_t length_low = 0;
    std::uint8_t msg_type = 0;
    if (!r.read_u8(length_low) || !r.read_u8(msg_type)) {
      return std::nullopt;
    }
    return msg_type == 1 ? errc::sslv2_client_hello : errc::not_tls;
  }
  std::uint8_t major = 0;
  if (!r.read_u8(major)) {
    return std::nullopt;
  }
  if (major != 3) {
    return first_record ? errc::not_tls : errc::unsupported_record_version;
  }
  std::uint8_t minor = 0;
  if (!r.read_u8(minor)) {
    return std::nullopt;
  }
  if (minor < 1 || minor > 3) {
    return errc::unsupported_record_version;
  }
  std::uint16_t length = 0;
  if (!r.read_u16(length)) {
    return std::nullopt;
  }
  if (length == 0) {
    return errc::empty_record;
  }
  if (length > kMaxRecordPayloadBytes) {
    return errc::record_too_large;
  }
  return std::nullopt;
}

/// Copies the first `n` (at most 4) handshake bytes out of the fragments received so far.
std::array<std::byte, kHandshakeHeaderBytes> handshake_prefix(
    const std::vector<std::span<const std::byte>>& fragments) {
  std::array<std::byte, kHandshakeHeaderBytes> out{};
  std::size_t have = 0;
  for (const auto fragment : fragments) {
    const std::size_t take = std::min(fragment.size(), out.size() - have);
    std::copy_n(fragment.begin(), take, out.begin() + static_cast<std::ptrdiff_t>(have));
    have += take;
    if (have == out.size()) {
      break;
    }
  }
  return out;
}

bool is_hostname_byte(char c) {
  // Printable ASCII without space: everything else (NUL, controls, UTF-8) can't be in a
  // hostname. Hostname::parse applies the exact LDH rules later.
  return c > 0x20 && c < 0x7f;
}

std::optional<errc> parse_server_name(ByteReader data, ClientHelloResult& out) {
  ByteReader list;
  if (!data.read_prefixed_u16(list) || !data.empty() || list.empty()) {
    return errc::malformed_server_name;
  }
  while (!list.empty()) {
    std::uint8_t name_type = 0;
    ByteReader name;
    if (!list.read_u8(name_type) || !list.read_prefixed_u16(name)) {
      return errc::truncated_server_name;
    }
    if (name_type != kNameTypeHostName) {
      continue;  // RFC 6066 leaves room for other name types; none are defined to route on
    }
    if (out.server_name) {
      return errc::duplicate_server_name;
    }
    const std::string_view chars = name.rest_as_chars();
    if (chars.empty() || chars.size() > kMaxServerNameBytes ||
        !std::all_of(chars.begin(), chars.end(), is_hostname_byte)) {
      return errc::bad_server_name;
    }
    out.server_name.emplace(chars);
  }
  return std::nullopt;
}

std::optional<errc> parse_alpn(ByteReader data, ClientHelloResult& out) {
  ByteReader list;
  if (!data.read_prefixed_u16(list) || !data.empty() || list.empty()) {
    return errc::malformed_alpn;
  }
  while (!list.empty()) {
    ByteReader protocol;
    if (!list.read_prefixed_u8(protocol) || protocol.empty()) {
      return errc::malformed_alpn;
    }
    out.alpn.emplace_back(protocol.rest_as_chars());
  }
  return std::nullopt;
}

/// Parses the ClientHello body (after the 4-byte handshake header); see the grammar above
/// parse_client_hello().
ClientHelloResult parse_body(std::span<const std::byte> body, std::size_t consumed) {
  ByteReader r(body);
  if (!r.skip(kVersionAndRandomBytes)) {
    return invalid(errc::truncated_client_hello);
  }
  ByteReader session_id;
  if (!r.read_prefixed_u8(session_id)) {
    return invalid(errc::truncated_session_id);
  }
  if (session_id.remaining() > kMaxSessionIdBytes) {
    return invalid(errc::malformed_session_id);
  }
  ByteReader suites;
  if (!r.read_prefixed_u16(suites)) {
    return invalid(errc::truncated_cipher_suites);
  }
  if (suites.empty() || suites.remaining() % 2 != 0) {
    return invalid(errc::malformed_cipher_suites);
  }
  ByteReader compression;
  if (!r.read_prefixed_u8(compression)) {
    return invalid(errc::truncated_compression_methods);
  }
  if (compression.empty()) {
    return invalid(errc::malformed_compression_methods);
  }

  ClientHelloResult out;
  out.status = ParseStatus::complete;
  out.consumed = consumed;
  if (r.empty()) {
    return out;  // pre-TLS-1.2 clients may omit the extension block (RFC 5246 7.4.1.2)
  }
  ByteReader extensions;
  if (!r.read_prefixed_u16(extensions)) {
    return invalid(errc::truncated_extensions);
  }
  if (!r.empty()) {
    return invalid(errc::trailing_bytes);
  }
  std::bitset<65536> seen;
  while (!extensions.empty()) {
    std::uint16_t type = 0;
    ByteReader data;
    if (!extensions.read_u16(type) || !extensions.read_prefixed_u16(data)) {
      return invalid(errc::truncated_extension);
    }
    if (seen.test(type)) {
      return invalid(errc::duplicate_extension);
    }
    seen.set(type);
    std::optional<errc> e;
    if (type == kExtServerName) {
      e = parse_server_name(data, out);
    } else if (type == kExtAlpn) {
      e = parse_alpn(data, out);
    }
    if (e) {
      return invalid(*e);
    }
  }
  return out;
}

}  // namespace

const std::error_category& client_hello_category() noexcept {
  static const ClientHelloCategory category;
  return category;
}

std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), client_hello_category()};
}

// Wire grammar (RFC 8446 5.1, 4.1.2, 4.2; RFC 6066 3; RFC 7301 3.1), all integers big-endian:
//
//   input        = record+ ...                   ; bytes after the hello's last record are
//                                                ; not ours (0-RTT data, CCS)
//   record       = type:u8(=22) version:u16(0x0301..0x0303) length:u16(1..2^14+2048)
//                  fragment[length]
//   handshake    = concatenation of the fragments, ending exactly with a record:
//                  msg_type:u8(=1) length:u24(<=64 KiB) ClientHello[length]
//   ClientHello  = legacy_version:u16 random[32]
//                  session_id<0..32>:u8-prefixed
//                  cipher_suites<2..2^16-2>:u16-prefixed, even length
//                  compression_methods<1..2^8-1>:u8-prefixed
//                  [extensions<0..2^16-1>:u16-prefixed]   ; absent only before TLS 1.2,
//                                                        ; nothing may follow it
//   extension    = type:u16 data<0..2^16-1>:u16-prefixed ; each type at most once
//   server_name  (type 0)  data = list<1..2^16-1>:u16-prefixed, filling data exactly
//                  entry   = name_type:u8 name<1..2^16-1>:u16-prefixed
//                  name_type 0 = host_name (at most one); others are skipped
//   ALPN         (type 16) data = list<2..2^16-1>:u16-prefixed, filling data exactly
//                  entry   = name<1..2^8-1>:u8-prefixed
//
// A record header is judged byte by byte as it arrives; the handshake header as soon as its
// four bytes are in, so an over-cap length is refused before any of the body is read.
ClientHelloResult parse_client_hello(std::span<const std::byte> input) {
  ByteReader in(input);
  std::vector<std::span<const std::byte>> fragments;
  std::size_t have = 0;             // handshake bytes received so far
  std::optional<std::size_t> need;  // handshake bytes of the whole hello, once known
  bool first_record = true;
  for (;;) {
    const std::size_t record_start = in.position();
    const auto header = in.rest().first(std::min(in.remaining(), kRecordHeaderBytes));
    if (const auto e = check_record_header(header, first_record)) {
      return invalid(*e);
    }
    if (header.size() < kRecordHeaderBytes) {
      // Lower bound: this header, plus the handshake bytes still missing.
      const std::size_t missing = need ? *need - have : kHandshakeHeaderBytes - have;
      return need_more(record_start + kRecordHeaderBytes + missing);
    }
    std::uint8_t type = 0;
    std::uint16_t version = 0;
    std::uint16_t length = 0;
    if (!in.read_u8(type) || !in.read_u16(version) || !in.read_u16(length)) {
      return invalid(errc::not_tls);  // unreachable: the five bytes are there
    }
    const std::size_t record_end = in.position() + length;
    std::span<const std::byte> fragment;
    const bool whole = in.read_bytes(length, fragment);
    if (!whole) {
      fragment = in.rest();
      (void)in.skip(fragment.size());
    }
    if (!fragment.empty()) {
      fragments.push_back(fragment);
      have += fragment.size();
    }

    if (!need && have >= 1) {
      const auto prefix = handshake_prefix(fragments);
      ByteReader h(prefix);
      std::uint8_t msg_type = 0;
      std::uint32_t msg_length = 0;
      if (!h.read_u8(msg_type) || msg_type != kHandshakeClientHello) {
        return invalid(errc::not_client_hello);
      }
      if (have >= kHandshakeHeaderBytes) {
        if (!h.read_u24(msg_length) || msg_length > kMaxClientHelloBytes) {
          return invalid(errc::client_hello_too_large);
        }
        need = kHandshakeHeaderBytes + msg_length;
      }
    }
    if (need && have > *need) {
      return invalid(errc::extra_handshake_data);
    }

    if (!whole) {
      if (!need) {
        return need_more(std::min(record_end, input.size() + (kHandshakeHeaderBytes - have)));
      }
      const std::size_t missing = *need - have;
      const std::size_t left_in_record = record_end - input.size();
      if (missing <= left_in_record) {
        return need_more(record_end);  // the hello ends in this record; the record must too
      }
      return need_more(record_end + kRecordHeaderBytes + (missing - left_in_record));
    }
    first_record = false;
    if (need && have == *need) {
      if (fragments.size() == 1) {
        return parse_body(fragments.front().subspan(kHandshakeHeaderBytes), in.position());
      }
      std::vector<std::byte> message;
      message.reserve(have);
      for (const auto f : fragments) {
        message.insert(message.end(), f.begin(), f.end());
      }
      return parse_body(std::span<const std::byte>(message).subspan(kHandshakeHeaderBytes),
                        in.position());
    }
  }
}

std::optional<std::uint8_t> alert_for(std::error_code error) noexcept {
  if (error.category() != client_hello_category()) {
    return std::nullopt;
  }
  switch (static_cast<errc>(error.value())) {
    case errc::not_tls:
    case errc::sslv2_client_hello:
      return std::nullopt;
    case errc::record_too_large:
      return kAlertRecordOverflow;
    case errc::unsupported_record_version:
      return kAlertProtocolVersion;
    default:
      return kAlertDecodeError;
  }
}

}  // namespace gw::sni

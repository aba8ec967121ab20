// PROXY protocol version 2 (HAProxy's doc/proxy-protocol.txt), the binary header a TCP proxy
// puts in front of a connection to say who the real client was. Two users: the public listener
// reads it from `--trusted-proxy` load balancers (HAProxy `send-proxy-v2`), and the cluster relay
// (cluster/) writes and reads it between nodes, with the SNI, the ingress connection id and the
// route the ingress chose (a custom TLV) in it. Pure: no sockets, no logging.
// Deliberately not here: version 1 (text; nobody we accept from sends it), CRC32C checking
// (PP2_TYPE_CRC32C is skipped like any TLV we don't use: the header travels over TCP, or
// inside the relay's TLS), and the SSL/NETNS TLVs.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "common/expected.hpp"

namespace gw::proxy {

/// The 12 bytes every v2 header starts with ("\r\n\r\n\0\r\nQUIT\n").
inline constexpr std::size_t kSignatureBytes = 12;
/// Signature, version/command, family/transport, u16 length.
inline constexpr std::size_t kFixedBytes = 16;
/// Most address-and-TLV bytes we accept after the fixed part: IPv6 addresses (36) plus an
/// authority (3 + 255), a unique id (3 + 128), our route TLV (3 + 73) and room for a balancer's
/// own TLVs (ALPN, NOOP padding). A header is read before the ClientHello, inside the same
/// deadline and byte caps, so this only bounds what one connection may make us hold early.
inline constexpr std::size_t kMaxPayloadBytes = 2048;
inline constexpr std::size_t kMaxHeaderBytes = kFixedBytes + kMaxPayloadBytes;

inline constexpr std::uint8_t kTypeAuthority = 0x02;  ///< PP2_TYPE_AUTHORITY: the SNI
inline constexpr std::uint8_t kTypeUniqueId = 0x05;   ///< PP2_TYPE_UNIQUE_ID: at most 128 bytes
/// Custom (PP2_TYPE_MIN_CUSTOM): the route the ingress node chose, see RouteTlv.
inline constexpr std::uint8_t kTypeRoute = 0xE0;
/// Custom: the connection is a teammate's `ssh -L` / `-W` to an internal endpoint, see
/// TeammateTlv. Without it a relayed connection is a public visitor's.
inline constexpr std::uint8_t kTypeTeammate = 0xE1;
inline constexpr std::size_t kMaxFingerprintBytes = 128;
inline constexpr std::size_t kMaxUniqueIdBytes = 128;
inline constexpr std::size_t kMaxAuthorityBytes = 255;
inline constexpr std::size_t kMaxSessionIdBytes = 64;

enum class errc {
  not_proxy = 1,        ///< the first bytes are not the v2 signature
  bad_version,          ///< version nibble is not 2
  bad_command,          ///< command is neither LOCAL (0) nor PROXY (1)
  bad_family,           ///< address family over 3 (UNIX)
  bad_transport,        ///< transport not STREAM (or UNSPEC): we only carry TCP
  too_large,            ///< length over kMaxPayloadBytes
  truncated_addresses,  ///< length shorter than the family's address block
  truncated_tlv,        ///< a TLV header or value runs past the header
  duplicate_tlv,        ///< a TLV we read appears twice
  bad_authority,        ///< empty, over 255 bytes, or bytes no hostname has
  bad_unique_id,        ///< empty or over 128 bytes
  bad_route,            ///< the 0xE0 TLV has an unknown version or a bad session id
  bad_teammate,         ///< the 0xE1 TLV is short, or its fingerprint empty or not printable
  value_too_long,       ///< build(): a value does not fit its TLV
};

const std::error_category& proxy_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

enum class Status { complete, need_more, invalid };

/// The 0xE0 TLV's value: u8 version (1), u64 registration revision (big-endian), then the
/// owner's session id (1..64 bytes of printable ASCII, no spaces).
struct RouteTlv {
  std::string session_id;
  std::int64_t revision = 0;
  friend bool operator==(const RouteTlv&, const RouteTlv&) = default;
};

/// The 0xE1 TLV's value: u64 session id (big-endian) of the teammate's session on the ingress
/// node, then its key's fingerprint (1..128 bytes of printable ASCII, no spaces): what the
/// owner's tcp_connection_closed names as client_session.
struct TeammateTlv {
  std::uint64_t session_id = 0;
  std::string key_fingerprint;
  friend bool operator==(const TeammateTlv&, const TeammateTlv&) = default;
};

struct Header {
  /// false: a LOCAL header (a balancer's own health check): use the connection's real
  /// addresses. true: PROXY, with the addresses below when the family is INET or INET6.
  bool proxied = true;
  /// The original client and the address it connected to; nullopt for LOCAL, UNSPEC and UNIX.
  std::optional<boost::asio::ip::tcp::endpoint> source;
  std::optional<boost::asio::ip::tcp::endpoint> destination;
  std::optional<std::string> authority;  ///< PP2_TYPE_AUTHORITY, as sent
  std::optional<std::string> unique_id;  ///< PP2_TYPE_UNIQUE_ID, as sent (bytes)
  std::optional<RouteTlv> route;
  std::optional<TeammateTlv> teammate;
};

struct ParseResult {
  Status status = Status::need_more;
  std::error_code error;          ///< set iff status == invalid
  std::size_t consumed = 0;       ///< complete: the header's length; what follows is payload
  std::size_t need_at_least = 0;  ///< need_more: a lower bound on the input length to complete
  Header header;
};

/// Parses the v2 header at the start of `input` (everything read so far). Never throws, never
/// reads past `input`. need_more (with need_at_least > input.size()) while bytes are missing;
/// a prefix that can't become the signature is not_proxy at once. invalid with one of:
/// not_proxy, bad_version, bad_command, bad_family, bad_transport, too_large,
/// truncated_addresses, truncated_tlv, duplicate_tlv, bad_authority, bad_unique_id, bad_route,
/// bad_teammate.
/// Unknown TLVs are skipped, as the spec asks.
ParseResult parse(std::span<const std::byte> input);

/// A PROXY (not LOCAL) header, family INET when both addresses are IPv4 (or v4-mapped), else
/// INET6 (an IPv4 one written v4-mapped), transport STREAM, with the TLVs that are set.
/// `source` and `destination` are required. value_too_long when a TLV value is over its cap
/// (authority 255, unique id 128, session id 64, fingerprint 128 bytes) or empty.
Expected<std::vector<std::byte>> build(const Header& header);

}  // namespace gw::proxy

GW_DECLARE_ERRC(gw::proxy::errc)

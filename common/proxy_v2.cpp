// The PROXY v2 parser and builder; see proxy_v2.hpp. Wire grammar (proxy-protocol.txt 2.2):
//
//   signature[12] = 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
//   ver_cmd u8    = version (high nibble, 2) | command (low: 0 LOCAL, 1 PROXY)
//   fam u8        = family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) | transport (low: 0 UNSPEC,
//                   1 STREAM, 2 DGRAM)
//   len u16       = bytes that follow: the address block, then TLVs up to the end
//   INET:  src_addr[4]  dst_addr[4]  src_port u16 dst_port u16    (12 bytes)
//   INET6: src_addr[16] dst_addr[16] src_port u16 dst_port u16    (36 bytes)
//   UNIX:  src_addr[108] dst_addr[108]                            (216 bytes)
//   TLV:   type u8, length u16, value[length]
//
// LOCAL headers (health checks) carry nothing we use: the block is skipped whole.
#include "common/proxy_v2.hpp"

#include <algorithm>
#include <array>
#include <bitset>

#include "common/byte_reader.hpp"

namespace gw::proxy {
namespace {

constexpr std::array<std::uint8_t, kSignatureBytes> kSignature = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

constexpr std::uint8_t kVersion2 = 0x2;
constexpr std::uint8_t kCommandLocal = 0x0;
constexpr std::uint8_t kCommandProxy = 0x1;
constexpr std::uint8_t kFamilyUnspec = 0x0;
constexpr std::uint8_t kFamilyInet = 0x1;
constexpr std::uint8_t kFamilyInet6 = 0x2;
constexpr std::uint8_t kFamilyUnix = 0x3;
constexpr std::uint8_t kTransportUnspec = 0x0;
constexpr std::uint8_t kTransportStream = 0x1;
constexpr std::size_t kInetBlock = 12;
constexpr std::size_t kInet6Block = 36;
constexpr std::size_t kUnixBlock = 216;
constexpr std::uint8_t kRouteVersion = 1;

class ProxyCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "gw.proxy_v2"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::not_proxy:
        return "not a PROXY protocol v2 header";
      case errc::bad_version:
        return "PROXY header version is not 2";
      case errc::bad_command:
        return "PROXY header command is neither LOCAL nor PROXY";
      case errc::bad_family:
        return "unknown PROXY address family";
      case errc::bad_transport:
        return "PROXY header transport is not STREAM";
      case errc::too_large:
        return "PROXY header over 2 KiB";
      case errc::truncated_addresses:
        return "PROXY header shorter than its address block";
      case errc::truncated_tlv:
        return "truncated PROXY TLV";
      case errc::duplicate_tlv:
        return "duplicate PROXY TLV";
      case errc::bad_authority:
        return "bad PROXY authority (SNI) TLV";
      case errc::bad_unique_id:
        return "bad PROXY unique id TLV";
      case errc::bad_route:
        return "bad snigate route TLV";
      case errc::bad_teammate:
        return "bad snigate teammate TLV";
      case errc::value_too_long:
        return "a PROXY TLV value is empty or too long";
    }
    return "unknown PROXY header error";
  }
};

ParseResult invalid(errc e) {
  ParseResult r;
  r.status = Status::invalid;
  r.error = make_error_code(e);
  return r;
}

ParseResult need(std::size_t at_least) {
  ParseResult r;
  r.status = Status::need_more;
  r.need_at_least = at_least;
  return r;
}

/// Printable ASCII without spaces: what a hostname, a session id or a log id may hold.
bool printable_token(std::span<const std::byte> bytes, std::size_t max) {
  return !bytes.empty() && bytes.size() <= max &&
         std::all_of(bytes.begin(), bytes.end(), [](std::byte b) {
           const auto c = std::to_integer<std::uint8_t>(b);
           return c > 0x20 && c < 0x7F;
         });
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string as_string(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

template <std::size_t N>
bool read_address(ByteReader& r, std::array<unsigned char, N>& out) {
  std::span<const std::byte> bytes;
  if (!r.read_bytes(N, bytes)) {
    return false;
  }
  std::transform(bytes.begin(), bytes.end(), out.begin(),
                 [](std::byte b) { return std::to_integer<unsigned char>(b); });
  return true;
}

/// The address block of an INET or INET6 header; false when it is shorter than the family's.
bool read_endpoints(ByteReader& r, std::uint8_t family, Header& h) {
  using boost::asio::ip::tcp;
  std::uint16_t src_port = 0;
  std::uint16_t dst_port = 0;
  if (family == kFamilyInet) {
    boost::asio::ip::address_v4::bytes_type src{};
    boost::asio::ip::address_v4::bytes_type dst{};
    if (!read_address(r, src) || !read_address(r, dst) || !r.read_u16(src_port) ||
        !r.read_u16(dst_port)) {
      return false;
    }
    h.source = tcp::endpoint(boost::asio::ip::address_v4(src), src_port);
    h.destination = tcp::endpoint(boost::asio::ip::address_v4(dst), dst_port);
    return true;
  }
  boost::asio::ip::address_v6::bytes_type src{};
  boost::asio::ip::address_v6::bytes_type dst{};
  if (!read_address(r, src) || !read_address(r, dst) || !r.read_u16(src_port) ||
      !r.read_u16(dst_port)) {
    return false;
  }
  h.source = tcp::endpoint(boost::asio::ip::address_v6(src), src_port);
  h.destination = tcp::endpoint(boost::asio::ip::address_v6(dst), dst_port);
  return true;
}

std::uint64_t read_u64(std::span<const std::byte> bytes) {
  std::uint64_t v = 0;
  for (const std::byte b : bytes) {
    v = v << 8 | std::to_integer<std::uint64_t>(b);
  }
  return v;
}

std::optional<errc> read_route(ByteReader value, RouteTlv& out) {
  std::uint8_t version = 0;
  std::span<const std::byte> revision;
  if (!value.read_u8(version) || version != kRouteVersion || !value.read_bytes(8, revision)) {
    return errc::bad_route;
  }
  const std::uint64_t rev = read_u64(revision);
  if (rev > static_cast<std::uint64_t>(INT64_MAX) ||
      !printable_token(value.rest(), kMaxSessionIdBytes)) {
    return errc::bad_route;
  }
  out.revision = static_cast<std::int64_t>(rev);
  out.session_id = as_string(value.rest());
  return std::nullopt;
}

std::optional<errc> read_teammate(ByteReader value, TeammateTlv& out) {
  std::span<const std::byte> session;
  if (!value.read_bytes(8, session) || !printable_token(value.rest(), kMaxFingerprintBytes)) {
    return errc::bad_teammate;
  }
  out.session_id = read_u64(session);
  out.key_fingerprint = as_string(value.rest());
  return std::nullopt;
}

std::optional<errc> read_tlvs(ByteReader r, Header& h) {
  std::bitset<256> seen;
  while (!r.empty()) {
    std::uint8_t type = 0;
    ByteReader value;
    if (!r.read_u8(type) || !r.read_prefixed_u16(value)) {
      return errc::truncated_tlv;
    }
    if (type != kTypeAuthority && type != kTypeUniqueId && type != kTypeRoute &&
        type != kTypeTeammate) {
      continue;  // "receivers must ignore unknown TLVs"
    }
    if (seen.test(type)) {
      return errc::duplicate_tlv;
    }
    seen.set(type);
    if (type == kTypeAuthority) {
      if (!printable_token(value.rest(), kMaxAuthorityBytes)) {
        return errc::bad_authority;
      }
      h.authority = as_string(value.rest());
    } else if (type == kTypeUniqueId) {
      if (value.empty() || value.remaining() > kMaxUniqueIdBytes) {
        return errc::bad_unique_id;
      }
      h.unique_id = as_string(value.rest());
    } else if (type == kTypeRoute) {
      RouteTlv route;
      if (const auto e = read_route(value, route)) {
        return e;
      }
      h.route = std::move(route);
    } else {
      TeammateTlv teammate;
      if (const auto e = read_teammate(value, teammate)) {
        return e;
      }
      h.teammate = std::move(teammate);
    }
  }
  return std::nullopt;
}

void put_u8(std::vector<std::byte>& out, std::uint8_t v) { out.push_back(std::byte{v}); }
void put_u16(std::vector<std::byte>& out, std::uint16_t v) {
  put_u8(out, static_cast<std::uint8_t>(v >> 8));
  put_u8(out, static_cast<std::uint8_t>(v & 0xFF));
}
void put_u64(std::vector<std::byte>& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    put_u8(out, static_cast<std::uint8_t>(v >> shift));
  }
}
template <class Bytes>
void put_bytes(std::vector<std::byte>& out, const Bytes& bytes) {
  for (const auto b : bytes) {
    put_u8(out, static_cast<std::uint8_t>(b));
  }
}
void put_tlv(std::vector<std::byte>& out, std::uint8_t type, std::span<const std::byte> value) {
  put_u8(out, type);
  put_u16(out, static_cast<std::uint16_t>(value.size()));
  out.insert(out.end(), value.begin(), value.end());
}

boost::asio::ip::address_v6 as_v6(const boost::asio::ip::address& a) {
  return a.is_v6() ? a.to_v6()
                   : boost::asio::ip::make_address_v6(boost::asio::ip::v4_mapped, a.to_v4());
}

std::optional<boost::asio::ip::address_v4> as_v4(const boost::asio::ip::address& a) {
  if (a.is_v4()) {
    return a.to_v4();
  }
  if (a.to_v6().is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
  }
  return std::nullopt;
}

}  // namespace

const std::error_category& proxy_category() noexcept {
  static const ProxyCategory category;
  return category;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), proxy_category()}; }

ParseResult parse(std::span<const std::byte> input) {
  const std::size_t prefix = std::min(input.size(), kSignatureBytes);
  for (std::size_t i = 0; i < prefix; ++i) {
    if (std::to_integer<std::uint8_t>(input[i]) != kSignature[i]) {
      return invalid(errc::not_proxy);  // decided on the first differing byte
    }
  }
  ByteReader r(input);
  std::uint8_t ver_cmd = 0;
  std::uint8_t fam = 0;
  std::uint16_t length = 0;
  if (!r.skip(kSignatureBytes) || !r.read_u8(ver_cmd)) {
    return need(kSignatureBytes + 1);
  }
  const std::uint8_t command = ver_cmd & 0x0F;
  if ((ver_cmd >> 4) != kVersion2) {
    return invalid(errc::bad_version);
  }
  if (command != kCommandLocal && command != kCommandProxy) {
    return invalid(errc::bad_command);
  }
  if (!r.read_u8(fam)) {
    return need(kSignatureBytes + 2);
  }
  const std::uint8_t family = fam >> 4;
  const std::uint8_t transport = fam & 0x0F;
  if (family > kFamilyUnix) {
    return invalid(errc::bad_family);
  }
  if (command == kCommandProxy && transport != kTransportStream && transport != kTransportUnspec) {
    return invalid(errc::bad_transport);
  }
  if (!r.read_u16(length)) {
    return need(kFixedBytes);
  }
  if (length > kMaxPayloadBytes) {
    return invalid(errc::too_large);
  }
  ByteReader block;
  if (!r.read_sub(length, block)) {
    return need(kFixedBytes + length);
  }
  ParseResult out;
  out.status = Status::complete;
  out.consumed = kFixedBytes + length;
  if (command == kCommandLocal || family == kFamilyUnspec) {
    // The spec: LOCAL (and UNSPEC) blocks are discarded, addresses and TLVs alike.
    out.header.proxied = command == kCommandProxy;
    return out;
  }
  const std::size_t need_block = family == kFamilyInet    ? kInetBlock
                                 : family == kFamilyInet6 ? kInet6Block
                                                          : kUnixBlock;
  if (block.remaining() < need_block) {
    return invalid(errc::truncated_addresses);
  }
  if (family == kFamilyUnix) {
    (void)block.skip(kUnixBlock);  // no IP to give: the caller keeps the real one
  } else {
    (void)read_endpoints(block, family, out.header);
  }
  if (const auto e = read_tlvs(block, out.header)) {
    return invalid(*e);
  }
  return out;
}

Expected<std::vector<std::byte>> build(const Header& header) {
  if (!header.source || !header.destination) {
    return Unexpected{errc::truncated_addresses};
  }
  if ((header.authority &&
       (header.authority->empty() || header.authority->size() > kMaxAuthorityBytes)) ||
      (header.unique_id &&
       (header.unique_id->empty() || header.unique_id->size() > kMaxUniqueIdBytes)) ||
      (header.route && (!printable_token(bytes_of(header.route->session_id), kMaxSessionIdBytes) ||
                        header.route->revision < 0)) ||
      (header.teammate &&
       !printable_token(bytes_of(header.teammate->key_fingerprint), kMaxFingerprintBytes))) {
    return Unexpected{errc::value_too_long};
  }
  std::vector<std::byte> out;
  out.reserve(kFixedBytes + kInet6Block + 64);
  put_bytes(out, kSignature);
  put_u8(out, kVersion2 << 4 | kCommandProxy);
  const auto src4 = as_v4(header.source->address());
  const auto dst4 = as_v4(header.destination->address());
  const bool inet = src4 && dst4;
  put_u8(out,
         static_cast<std::uint8_t>((inet ? kFamilyInet : kFamilyInet6) << 4 | kTransportStream));
  put_u16(out, 0);  // the length, filled in at the end
  if (inet) {
    put_bytes(out, src4->to_bytes());
    put_bytes(out, dst4->to_bytes());
  } else {
    put_bytes(out, as_v6(header.source->address()).to_bytes());
    put_bytes(out, as_v6(header.destination->address()).to_bytes());
  }
  put_u16(out, header.source->port());
  put_u16(out, header.destination->port());
  if (header.authority) {
    put_tlv(out, kTypeAuthority, bytes_of(*header.authority));
  }
  if (header.unique_id) {
    put_tlv(out, kTypeUniqueId, bytes_of(*header.unique_id));
  }
  if (header.route) {
    std::vector<std::byte> value;
    put_u8(value, kRouteVersion);
    put_u64(value, static_cast<std::uint64_t>(header.route->revision));
    put_bytes(value, header.route->session_id);
    put_tlv(out, kTypeRoute, value);
  }
  if (header.teammate) {
    std::vector<std::byte> value;
    put_u64(value, header.teammate->session_id);
    put_bytes(value, header.teammate->key_fingerprint);
    put_tlv(out, kTypeTeammate, value);
  }
  const std::size_t length = out.size() - kFixedBytes;
  out[14] = std::byte{static_cast<std::uint8_t>(length >> 8)};
  out[15] = std::byte{static_cast<std::uint8_t>(length & 0xFF)};
  return out;
}

}  // namespace gw::proxy

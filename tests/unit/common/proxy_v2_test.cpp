// PROXY v2 parser and builder: round trips, a split at every byte, named bad inputs with
// their exact errc, a LOCAL header, unknown TLVs skipped, and HAProxy's own bytes.
#include "common/proxy_v2.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace gw::proxy {
namespace {

using Bytes = std::vector<std::byte>;
using boost::asio::ip::make_address;
using boost::asio::ip::tcp;

Bytes bytes(std::initializer_list<int> v) {
  Bytes out;
  for (int b : v) {
    out.push_back(std::byte{static_cast<unsigned char>(b)});
  }
  return out;
}

Bytes cat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

const Bytes kSig = bytes({0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A});

Header full_header() {
  Header h;
  h.source = tcp::endpoint(make_address("203.0.113.9"), 51234);
  h.destination = tcp::endpoint(make_address("127.0.1.1"), 8443);
  h.authority = "app.alice.test";
  h.unique_id = "node-1/t42";
  h.route = RouteTlv{"s17@boot-abc", 1234567890123};
  h.teammate = TeammateTlv{0x0102030405060708, "SHA256:abc+/="};
  return h;
}

TEST(ProxyV2, RoundTripIpv4WithEveryTlv) {
  const auto wire = build(full_header());
  ASSERT_TRUE(wire);
  const auto r = parse(*wire);
  ASSERT_EQ(r.status, Status::complete) << r.error.message();
  EXPECT_EQ(r.consumed, wire->size());
  EXPECT_TRUE(r.header.proxied);
  EXPECT_EQ(*r.header.source, full_header().source);
  EXPECT_EQ(*r.header.destination, full_header().destination);
  EXPECT_EQ(r.header.authority, "app.alice.test");
  EXPECT_EQ(r.header.unique_id, "node-1/t42");
  EXPECT_EQ(r.header.route, full_header().route);
  EXPECT_EQ(r.header.teammate, full_header().teammate);
  EXPECT_EQ((*wire)[13], std::byte{0x11});  // INET, STREAM
}

TEST(ProxyV2, Ipv6AndMixedFamiliesBecomeInet6) {
  Header h;
  h.source = tcp::endpoint(make_address("2001:db8::7"), 443);
  h.destination = tcp::endpoint(make_address("10.0.0.1"), 8443);  // written v4-mapped
  const auto wire = build(h);
  ASSERT_TRUE(wire);
  EXPECT_EQ((*wire)[13], std::byte{0x21});
  EXPECT_EQ(wire->size(), 16u + 36u);
  const auto r = parse(*wire);
  ASSERT_EQ(r.status, Status::complete);
  EXPECT_EQ(r.header.source->address(), make_address("2001:db8::7"));
  EXPECT_EQ(r.header.destination->address(), make_address("::ffff:10.0.0.1"));
  EXPECT_FALSE(r.header.authority);
}

TEST(ProxyV2, V4MappedBothSidesIsInet) {
  Header h;
  h.source = tcp::endpoint(make_address("::ffff:198.51.100.1"), 1);
  h.destination = tcp::endpoint(make_address("127.0.0.1"), 2);
  const auto wire = build(h);
  ASSERT_TRUE(wire);
  EXPECT_EQ(wire->size(), 16u + 12u);
  EXPECT_EQ(parse(*wire).header.source->address(), make_address("198.51.100.1"));
}

TEST(ProxyV2, SplitAtEveryByteNeedsMoreThenCompletes) {
  auto wire = *build(full_header());
  const Bytes hello = bytes({0x16, 0x03, 0x01});
  const Bytes with_payload = cat(wire, hello);
  for (std::size_t n = 0; n < wire.size(); ++n) {
    const auto r = parse(std::span(wire).first(n));
    ASSERT_EQ(r.status, Status::need_more) << "at " << n;
    EXPECT_GT(r.need_at_least, n);
    EXPECT_LE(r.need_at_least, wire.size());
  }
  const auto r = parse(with_payload);
  ASSERT_EQ(r.status, Status::complete);
  EXPECT_EQ(r.consumed, wire.size());  // the ClientHello after it is not the header's
}

TEST(ProxyV2, HaproxySendProxyV2Bytes) {
  // What HAProxy 2.6 `send-proxy-v2` wrote for 172.19.0.1:42578 -> 172.19.0.3:80.
  const Bytes wire = cat(kSig, bytes({0x21, 0x11, 0x00, 0x0C, 0xAC, 0x13, 0x00, 0x01, 0xAC, 0x13,
                                      0x00, 0x03, 0xA6, 0x52, 0x00, 0x50}));
  const auto r = parse(wire);
  ASSERT_EQ(r.status, Status::complete);
  EXPECT_EQ(*r.header.source, tcp::endpoint(make_address("172.19.0.1"), 42578));
  EXPECT_EQ(*r.header.destination, tcp::endpoint(make_address("172.19.0.3"), 80));
}

TEST(ProxyV2, LocalHeaderIsAcceptedWithoutAddresses) {
  const Bytes wire = cat(kSig, bytes({0x20, 0x00, 0x00, 0x00}));
  const auto r = parse(wire);
  ASSERT_EQ(r.status, Status::complete);
  EXPECT_FALSE(r.header.proxied);
  EXPECT_FALSE(r.header.source);
  // LOCAL with an address block (HAProxy's health checks may send one): discarded whole.
  const Bytes with_block = cat(kSig, bytes({0x20, 0x11, 0x00, 0x03, 1, 2, 3}));
  EXPECT_EQ(parse(with_block).status, Status::complete);
}

TEST(ProxyV2, UnknownTlvsAreSkipped) {
  Bytes wire = cat(kSig, bytes({0x21, 0x11, 0x00, 12 + 7, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2}));
  wire = cat(wire, bytes({0x04, 0x00, 0x04, 0, 0, 0, 0}));  // PP2_TYPE_NOOP
  const auto r = parse(wire);
  ASSERT_EQ(r.status, Status::complete) << r.error.message();
  EXPECT_EQ(r.header.source->port(), 1);
}

struct BadCase {
  const char* name;
  Bytes input;
  errc expected;
};

TEST(ProxyV2, NamedBadInputs) {
  const Bytes inet = bytes({1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2});
  const std::vector<BadCase> cases = {
      {"tls record", bytes({0x16, 0x03, 0x01, 0x00}), errc::not_proxy},
      {"http", bytes({'G', 'E', 'T', ' '}), errc::not_proxy},
      {"v1 text", bytes({'P', 'R', 'O', 'X', 'Y', ' '}), errc::not_proxy},
      {"signature off at byte 11", cat(std::vector(kSig.begin(), kSig.end() - 1), bytes({0x0B})),
       errc::not_proxy},
      {"version 1", cat(kSig, bytes({0x11})), errc::bad_version},
      {"command 2", cat(kSig, bytes({0x22})), errc::bad_command},
      {"family 4", cat(kSig, bytes({0x21, 0x41})), errc::bad_family},
      {"dgram", cat(kSig, bytes({0x21, 0x12})), errc::bad_transport},
      {"length over cap", cat(kSig, bytes({0x21, 0x11, 0x08, 0x01})), errc::too_large},
      {"inet block short", cat(kSig, bytes({0x21, 0x11, 0x00, 0x02, 1, 2})),
       errc::truncated_addresses},
      {"inet6 block short", cat(cat(kSig, bytes({0x21, 0x21, 0x00, 12})), inet),
       errc::truncated_addresses},
      {"tlv header cut", cat(cat(kSig, bytes({0x21, 0x11, 0x00, 14})), cat(inet, bytes({2, 0}))),
       errc::truncated_tlv},
      {"tlv value past end",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 16})), cat(inet, bytes({2, 0, 9, 'a'}))),
       errc::truncated_tlv},
      {"empty authority",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 15})), cat(inet, bytes({2, 0, 0}))),
       errc::bad_authority},
      {"authority with space",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 17})), cat(inet, bytes({2, 0, 2, 'a', ' '}))),
       errc::bad_authority},
      {"two authorities",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 20})),
           cat(inet, bytes({2, 0, 1, 'a', 2, 0, 1, 'b'}))),
       errc::duplicate_tlv},
      {"empty unique id",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 15})), cat(inet, bytes({5, 0, 0}))),
       errc::bad_unique_id},
      {"route version 2",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 25})),
           cat(inet, bytes({0xE0, 0, 10, 2, 0, 0, 0, 0, 0, 0, 0, 1, 's'}))),
       errc::bad_route},
      {"route without session",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 24})),
           cat(inet, bytes({0xE0, 0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 1}))),
       errc::bad_route},
      {"route revision negative",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 25})),
           cat(inet, bytes({0xE0, 0, 10, 1, 0x80, 0, 0, 0, 0, 0, 0, 1, 's'}))),
       errc::bad_route},
      {"teammate without fingerprint",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 23})),
           cat(inet, bytes({0xE1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1}))),
       errc::bad_teammate},
      {"teammate session cut",
       cat(cat(kSig, bytes({0x21, 0x11, 0x00, 19})), cat(inet, bytes({0xE1, 0, 4, 0, 0, 0, 1}))),
       errc::bad_teammate},
  };
  for (const auto& c : cases) {
    const auto r = parse(c.input);
    EXPECT_EQ(r.status, Status::invalid) << c.name;
    EXPECT_EQ(r.error, make_error_code(c.expected)) << c.name << ": " << r.error.message();
    EXPECT_FALSE(r.error.message().empty());
  }
}

TEST(ProxyV2, PrefixOfTheSignatureNeedsMore) {
  EXPECT_EQ(parse({}).status, Status::need_more);
  EXPECT_EQ(parse(std::span(kSig).first(5)).status, Status::need_more);
  // ...but a wrong byte inside the signature is refused at once, not after 16 bytes.
  EXPECT_EQ(parse(bytes({0x0D, 0x0A, 0x0D, 0x0B})).error, make_error_code(errc::not_proxy));
}

TEST(ProxyV2, BuildRefusesValuesThatDontFit) {
  auto h = full_header();
  h.authority = std::string(256, 'a');
  EXPECT_EQ(build(h).error(), make_error_code(errc::value_too_long));
  h = full_header();
  h.teammate->key_fingerprint = std::string(129, 'f');
  EXPECT_EQ(build(h).error(), make_error_code(errc::value_too_long));
  h = full_header();
  h.unique_id = std::string(129, 'x');
  EXPECT_EQ(build(h).error(), make_error_code(errc::value_too_long));
  h = full_header();
  h.route->session_id = "has space";
  EXPECT_EQ(build(h).error(), make_error_code(errc::value_too_long));
  h = full_header();
  h.source.reset();
  EXPECT_FALSE(build(h));
}

}  // namespace
}  // namespace gw::proxy

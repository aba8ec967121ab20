// Tests for the ClientHello parser: real hellos from OpenSSL (TLS 1.2/1.3, SNI, ALPN, padding,
// hellos over several records), grinds over every split point, the 64 KiB cap, a table of
// hand-built bad inputs each with its exact errc, non-TLS input, and the alert mapping.
// Deliberately no sockets: the listener has its own integration tests.
#include "sni_router/client_hello.hpp"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/byte_reader.hpp"
#include "common/tls_alert.hpp"
#include "common/unique_handle.hpp"
#include "sni_router/limits.hpp"

namespace gw::sni {
namespace {

using Bytes = std::vector<std::byte>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, CFree<&SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, CFree<&SSL_free>>;

// ---- byte building -------------------------------------------------------------------------

Bytes b(std::initializer_list<int> v) {
  Bytes out;
  for (int x : v) {
    out.push_back(static_cast<std::byte>(x));
  }
  return out;
}

Bytes text(std::string_view s) {
  Bytes out;
  for (char c : s) {
    out.push_back(static_cast<std::byte>(c));
  }
  return out;
}

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) {
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

Bytes repeat(std::size_t n, int value) { return Bytes(n, static_cast<std::byte>(value)); }

/// `body` behind its true length as an n-byte big-endian prefix.
Bytes prefixed(int width, const Bytes& body) {
  Bytes out;
  for (int i = width - 1; i >= 0; --i) {
    out.push_back(static_cast<std::byte>((body.size() >> (8 * i)) & 0xff));
  }
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

/// Handshake message: msg_type, u24 length, body.
Bytes handshake(const Bytes& body, int msg_type = 1) {
  return cat({b({msg_type}), prefixed(3, body)});
}

/// Frames `payload` into handshake records of at most `size` bytes each.
Bytes records(const Bytes& payload, std::size_t size = 16384, int minor = 1) {
  Bytes out;
  for (std::size_t at = 0; at < payload.size(); at += size) {
    const std::size_t n = std::min(size, payload.size() - at);
    const Bytes chunk(payload.begin() + static_cast<std::ptrdiff_t>(at),
                      payload.begin() + static_cast<std::ptrdiff_t>(at + n));
    out = cat({out, b({22, 3, minor}), prefixed(2, chunk)});
  }
  return out;
}

/// The handshake bytes of a record stream (test helper over well-formed input only).
Bytes unframe(const Bytes& input) {
  Bytes out;
  ByteReader r(input);
  std::uint8_t type = 0;
  std::uint16_t version = 0;
  ByteReader fragment;
  while (r.read_u8(type) && r.read_u16(version) && r.read_prefixed_u16(fragment)) {
    const auto rest = fragment.rest();
    out.insert(out.end(), rest.begin(), rest.end());
  }
  EXPECT_TRUE(r.empty());
  return out;
}

Bytes extension(int type, const Bytes& data) {
  return cat({b({type >> 8, type & 0xff}), prefixed(2, data)});
}

Bytes sni_ext(std::string_view name) {
  return extension(0, prefixed(2, cat({b({0}), prefixed(2, text(name))})));
}

/// A ClientHello body: legacy_version 0x0303, random, 32-byte session id, one suite
/// (TLS_AES_128_GCM_SHA256), null compression, then `tail` (normally the extension block).
Bytes body_with_tail(const Bytes& tail) {
  return cat({b({3, 3}), repeat(32, 0xaa), prefixed(1, repeat(32, 0x55)), prefixed(2, b({0x13, 1})),
              prefixed(1, b({0})), tail});
}

Bytes body_with_extensions(const Bytes& extensions) {
  return body_with_tail(prefixed(2, extensions));
}

Bytes hello(const Bytes& extensions) {
  return records(handshake(body_with_extensions(extensions)));
}

// ---- real hellos from OpenSSL -------------------------------------------------------------

// g++ 12 warns about members left out of designated initializers even when they have default
// member initializers; the designated form is the readable one here, so keep it.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

struct OpenSslHello {
  int max_version = TLS1_3_VERSION;
  std::string sni;
  std::vector<std::string> alpn;
  bool padding = false;
  int big_extensions = 0;  ///< custom extensions of kBigExtensionBytes each
};

constexpr std::size_t kBigExtensionBytes = 4000;

int add_big_extension(SSL*, unsigned int, unsigned int, const unsigned char** out,
                      std::size_t* outlen, X509*, std::size_t, int*, void*) {
  static const std::vector<unsigned char> data(kBigExtensionBytes, 0x42);
  *out = data.data();
  *outlen = data.size();
  return 1;
}

/// Runs an OpenSSL client into memory BIOs and returns the bytes of its first flight.
Bytes openssl_client_hello(const OpenSslHello& o) {
  SslCtxPtr ctx{SSL_CTX_new(TLS_client_method())};
  EXPECT_NE(ctx, nullptr);
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), o.max_version);
  if (o.padding) {
    SSL_CTX_set_options(ctx.get(), SSL_OP_TLSEXT_PADDING);
  }
  for (int i = 0; i < o.big_extensions; ++i) {
    EXPECT_EQ(SSL_CTX_add_custom_ext(ctx.get(), 0xfa00 + i, SSL_EXT_CLIENT_HELLO, add_big_extension,
                                     nullptr, nullptr, nullptr, nullptr),
              1);
  }
  SslPtr ssl{SSL_new(ctx.get())};
  EXPECT_NE(ssl, nullptr);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), rbio, wbio);  // ssl now owns both BIOs; we only borrow wbio below
  SSL_set_connect_state(ssl.get());
  if (!o.sni.empty()) {
    EXPECT_EQ(SSL_set_tlsext_host_name(ssl.get(), o.sni.c_str()), 1);
  }
  if (!o.alpn.empty()) {
    std::vector<unsigned char> wire;
    for (const auto& p : o.alpn) {
      wire.push_back(static_cast<unsigned char>(p.size()));
      wire.insert(wire.end(), p.begin(), p.end());
    }
    EXPECT_EQ(SSL_set_alpn_protos(ssl.get(), wire.data(), static_cast<unsigned>(wire.size())), 0);
  }
  const int rc = SSL_do_handshake(ssl.get());
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(SSL_get_error(ssl.get(), rc), SSL_ERROR_WANT_READ);
  Bytes out(BIO_ctrl_pending(wbio));
  EXPECT_EQ(BIO_read(wbio, out.data(), static_cast<int>(out.size())), static_cast<int>(out.size()));
  return out;
}

std::string describe(const ClientHelloResult& r) {
  switch (r.status) {
    case ParseStatus::complete:
      return "complete consumed=" + std::to_string(r.consumed);
    case ParseStatus::need_more:
      return "need_more at_least=" + std::to_string(r.need_at_least);
    case ParseStatus::invalid:
      return "invalid " + r.error.message();
  }
  return "?";
}

/// Every proper prefix is need_more with a need_at_least that is past the prefix and no
/// further than the full hello (a true lower bound); the whole is complete.
void expect_grind(const Bytes& input, std::size_t stride = 1) {
  for (std::size_t k = 0; k < input.size(); k += stride) {
    const auto r = parse_client_hello(std::span(input).first(k));
    ASSERT_EQ(r.status, ParseStatus::need_more) << "prefix " << k << ": " << describe(r);
    ASSERT_GT(r.need_at_least, k) << "prefix " << k;
    ASSERT_LE(r.need_at_least, input.size()) << "prefix " << k;
  }
  const auto r = parse_client_hello(input);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.consumed, input.size());
}

/// Feeds one byte at a time like the listener, parsing only once need_at_least is reached.
/// Returns the number of parse calls, or 0 if it never completed.
std::size_t feed_honouring_need_at_least(const Bytes& input) {
  Bytes buffer;
  std::size_t need = 1;
  std::size_t calls = 0;
  for (const std::byte byte : input) {
    buffer.push_back(byte);
    if (buffer.size() < need) {
      continue;
    }
    ++calls;
    const auto r = parse_client_hello(buffer);
    if (r.status == ParseStatus::complete) {
      EXPECT_EQ(buffer.size(), input.size());
      return calls;
    }
    EXPECT_EQ(r.status, ParseStatus::need_more) << describe(r);
    if (r.status != ParseStatus::need_more) {
      return 0;
    }
    need = r.need_at_least;
  }
  return 0;
}

// ---- real hellos --------------------------------------------------------------------------

// Proves a stock TLS 1.3 hello yields its SNI and nothing is left over.
TEST(ClientHelloOpenSsl, Tls13WithSni) {
  const Bytes in = openssl_client_hello({.sni = "app.alice.example.com"});
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.consumed, in.size());
  EXPECT_EQ(r.server_name, "app.alice.example.com");
  EXPECT_TRUE(r.alpn.empty());
  expect_grind(in);
}

// Proves the SNI is kept as sent (no case folding) in a TLS 1.2-only hello.
TEST(ClientHelloOpenSsl, Tls12WithSniAsSent) {
  const Bytes in = openssl_client_hello({.max_version = TLS1_2_VERSION, .sni = "App.Example.COM"});
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.server_name, "App.Example.COM");
  expect_grind(in);
}

// Proves a hello without SNI completes with no server_name (the router then refuses it).
TEST(ClientHelloOpenSsl, NoSni) {
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    const Bytes in = openssl_client_hello({.max_version = version});
    const auto r = parse_client_hello(in);
    ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
    EXPECT_FALSE(r.server_name.has_value());
  }
}

// Proves ALPN names come out in order, next to the SNI.
TEST(ClientHelloOpenSsl, Alpn) {
  const Bytes in = openssl_client_hello({.sni = "h2.test", .alpn = {"h2", "http/1.1"}});
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.server_name, "h2.test");
  EXPECT_EQ(r.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
}

// Long enough (256..511 bytes) for OpenSSL's SSL_OP_TLSEXT_PADDING to pad it to 512 bytes.
constexpr const char* kPaddedName = "a-rather-long-label-for-the-padding-test.padded.example.com";

// Proves the padding extension (hello padded to 512 bytes) is skipped correctly.
TEST(ClientHelloOpenSsl, Padding) {
  const Bytes in = openssl_client_hello(
      {.max_version = TLS1_2_VERSION, .sni = kPaddedName, .alpn = {"h2"}, .padding = true});
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.server_name, kPaddedName);
  EXPECT_GE(in.size(), 512u);
}

// Proves a hello that OpenSSL itself splits over several 16 KiB records is reassembled.
TEST(ClientHelloOpenSsl, ManyBigExtensionsSpanRecords) {
  const Bytes in = openssl_client_hello({.sni = "big.example.com", .big_extensions = 10});
  ASSERT_GT(in.size(), 2 * 16384u);  // at least three records
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.consumed, in.size());
  EXPECT_EQ(r.server_name, "big.example.com");
  expect_grind(in, 61);
  EXPECT_GT(feed_honouring_need_at_least(in), 0u);
}

// Proves a real hello re-framed into 100-byte records is reassembled, at every split.
TEST(ClientHelloOpenSsl, ReframedIntoSmallRecords) {
  const Bytes original = openssl_client_hello({.sni = "multi.example.com", .alpn = {"h2"}});
  const Bytes in = records(unframe(original), 100, 3);
  ASSERT_GT(in.size() / 105, 2u);
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.server_name, "multi.example.com");
  EXPECT_EQ(r.alpn, std::vector<std::string>{"h2"});
  expect_grind(in);
}

// ---- grinds --------------------------------------------------------------------------------

// Proves byte-at-a-time feeding completes, and that honouring need_at_least parses once per
// record rather than once per byte.
TEST(ClientHelloGrind, ByteAtATimeHonoursNeedAtLeast) {
  const Bytes one_record = openssl_client_hello({.sni = "a.example.com"});
  const std::size_t calls = feed_honouring_need_at_least(one_record);
  EXPECT_GT(calls, 0u);
  EXPECT_LE(calls, 3u);  // header, handshake header, whole record

  const Bytes small_records = records(unframe(one_record), 100);
  const std::size_t record_count = (small_records.size() + 104) / 105;
  const std::size_t small_calls = feed_honouring_need_at_least(small_records);
  EXPECT_GT(small_calls, 0u);
  EXPECT_LE(small_calls, record_count + 2);
}

// Proves 1-byte records don't make a need_at_least-honouring caller parse once per record:
// the bound counts the handshake bytes still missing, so the calls shrink geometrically.
TEST(ClientHelloGrind, TinyRecordsStaySubQuadratic) {
  const Bytes tiny = records(unframe(openssl_client_hello({.sni = "tiny.example.com"})), 1);
  const std::size_t record_count = tiny.size() / 6;
  ASSERT_GT(record_count, 200u);
  const std::size_t calls = feed_honouring_need_at_least(tiny);
  EXPECT_GT(calls, 0u);
  EXPECT_LT(calls, 60u) << "records=" << record_count;
  expect_grind(tiny, 7);
}

// Proves bytes after the hello's last record (0-RTT data, a CCS) don't change the result.
TEST(ClientHelloGrind, LaterRecordsAreNotConsumed) {
  const Bytes h = hello(sni_ext("x.test"));
  const Bytes in = cat({h, b({20, 3, 3, 0, 1, 1}), text("GET")});
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.consumed, h.size());
  EXPECT_EQ(r.server_name, "x.test");
}

// ---- the cap -------------------------------------------------------------------------------

// Proves an over-cap length is refused from the 4-byte handshake header alone.
TEST(ClientHelloCap, RefusedFromHandshakeHeader) {
  // record: handshake, 3.1, length 4 | handshake: client_hello, length 0x010001 = 65537
  const Bytes in = b({22, 3, 1, 0x00, 0x04, /**/ 1, 0x01, 0x00, 0x01});
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::invalid) << describe(r);
  EXPECT_EQ(r.error, errc::client_hello_too_large);
  EXPECT_EQ(alert_for(r.error), kAlertDecodeError);
  // ... even when the header itself is split over two records.
  const Bytes split = b({22, 3, 1, 0, 2, /**/ 1, 0x01, /**/ 22, 3, 1, 0, 2, /**/ 0x00, 0x01});
  EXPECT_EQ(parse_client_hello(split).error, errc::client_hello_too_large);
}

// Proves a hello of exactly 64 KiB is accepted (the cap is inclusive) across five records.
TEST(ClientHelloCap, ExactlyAtCapIsAccepted) {
  const Bytes base = body_with_extensions(sni_ext("cap.test"));
  // padding extension (21) sized so that the body is exactly kMaxClientHelloBytes
  const std::size_t pad = kMaxClientHelloBytes - base.size() - 4;
  const Bytes body =
      body_with_extensions(cat({sni_ext("cap.test"), extension(21, repeat(pad, 0))}));
  ASSERT_EQ(body.size(), kMaxClientHelloBytes);
  const Bytes in = records(handshake(body));
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.server_name, "cap.test");
  EXPECT_GT(feed_honouring_need_at_least(in), 0u);

  const Bytes over =
      body_with_extensions(cat({sni_ext("cap.test"), extension(21, repeat(pad + 1, 0))}));
  EXPECT_EQ(parse_client_hello(records(handshake(over))).error, errc::client_hello_too_large);
}

// Proves the record-size limit: 2^14+2048 is waited for, one more is record_overflow.
TEST(ClientHelloCap, RecordLength) {
  const auto at_limit = parse_client_hello(b({22, 3, 3, 0x48, 0x00, 1}));
  EXPECT_EQ(at_limit.status, ParseStatus::need_more) << describe(at_limit);
  const auto over = parse_client_hello(b({22, 3, 3, 0x48, 0x01}));
  EXPECT_EQ(over.error, errc::record_too_large);
  EXPECT_EQ(alert_for(over.error), kAlertRecordOverflow);
}

// ---- named bad inputs ----------------------------------------------------------------------

struct BadCase {
  const char* name;
  Bytes input;
  errc expected;
};

const Bytes kSuites = prefixed(2, b({0x13, 0x01}));  // TLS_AES_128_GCM_SHA256
const Bytes kNullCompression = prefixed(1, b({0}));
const Bytes kVersionRandom = cat({b({3, 3}), repeat(32, 0xaa)});

/// A partial first record carrying the start of a hello (type 1, length 100, two body bytes).
const Bytes kHelloStart = b({22, 3, 1, 0, 6, /**/ 1, 0, 0, 100, /**/ 3, 3});

std::vector<BadCase> bad_cases() {
  auto body = [](const Bytes& b) { return records(handshake(b)); };
  auto name_entry = [](int type, const Bytes& name) { return cat({b({type}), prefixed(2, name)}); };
  return {
      {"http", text("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), errc::not_tls},
      {"ssh banner", text("SSH-2.0-OpenSSH_9.2\r\n"), errc::not_tls},
      {"zero byte", b({0}), errc::not_tls},
      {"handshake type then not version 3", b({22, 0x47, 0x45}), errc::not_tls},
      {"alert record first", b({21, 3, 3, 0, 2, 2, 40}), errc::not_tls},
      {"sslv2 hello", b({0x80, 0x2e, /*CLIENT-HELLO*/ 1, 3, 1, 0, 0x15}), errc::sslv2_client_hello},
      {"high bit, not sslv2 hello", b({0x80, 0x2e, 4}), errc::not_tls},
      {"ssl 3.0 record", b({22, 3, 0, 0, 4}), errc::unsupported_record_version},
      {"record version 3.4", b({22, 3, 4, 0, 4}), errc::unsupported_record_version},
      {"second record version 2.0", cat({kHelloStart, b({22, 2, 0})}),
       errc::unsupported_record_version},
      {"record longer than 2^14+2048", b({22, 3, 1, 0x48, 0x01}), errc::record_too_large},
      {"empty first record", b({22, 3, 1, 0, 0}), errc::empty_record},
      {"empty second record", cat({kHelloStart, b({22, 3, 1, 0, 0})}), errc::empty_record},
      {"alert between hello records", cat({kHelloStart, b({21, 3, 3, 0, 2, 2, 40})}),
       errc::record_interleaved},
      {"ccs between hello records", cat({kHelloStart, b({20, 3, 3, 0, 1, 1})}),
       errc::record_interleaved},
      {"server hello", records(handshake(body_with_extensions({}), 2)), errc::not_client_hello},
      {"hello request, 1 byte", b({22, 3, 1, 0, 1, 0}), errc::not_client_hello},
      {"over cap", b({22, 3, 1, 0, 4, 1, 1, 0, 1}), errc::client_hello_too_large},
      {"u24 max length", b({22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}), errc::client_hello_too_large},
      {"handshake bytes after the hello",
       records(cat({handshake(body_with_extensions(sni_ext("a.io"))), b({1})})),
       errc::extra_handshake_data},
      {"hello of 10 bytes", body(repeat(10, 3)), errc::truncated_client_hello},
      {"empty hello", body({}), errc::truncated_client_hello},
      {"session id runs past", body(cat({kVersionRandom, b({32}), repeat(5, 0)})),
       errc::truncated_session_id},
      {"no session id byte", body(kVersionRandom), errc::truncated_session_id},
      {"session id of 33", body(cat({kVersionRandom, prefixed(1, repeat(33, 0)), kSuites})),
       errc::malformed_session_id},
      {"suites run past", body(cat({kVersionRandom, b({0}), b({0, 16, 0x13, 1})})),
       errc::truncated_cipher_suites},
      {"one byte of suites length", body(cat({kVersionRandom, b({0}), b({0})})),
       errc::truncated_cipher_suites},
      {"no suites", body(cat({kVersionRandom, b({0}), b({0, 0}), kNullCompression})),
       errc::malformed_cipher_suites},
      {"odd suites",
       body(cat({kVersionRandom, b({0}), b({0, 3, 0x13, 1, 0x13}), kNullCompression})),
       errc::malformed_cipher_suites},
      {"compression runs past", body(cat({kVersionRandom, b({0}), kSuites, b({5, 0})})),
       errc::truncated_compression_methods},
      {"compression length missing", body(cat({kVersionRandom, b({0}), kSuites})),
       errc::truncated_compression_methods},
      {"no compression", body(cat({kVersionRandom, b({0}), kSuites, b({0})})),
       errc::malformed_compression_methods},
      {"one byte of extensions length", body(body_with_tail(b({0}))), errc::truncated_extensions},
      {"extensions run past", body(body_with_tail(b({0, 16, 0, 0, 0, 0}))),
       errc::truncated_extensions},
      {"extension body runs past block", hello(b({0, 10, /*len*/ 0, 8, 1, 2})),
       errc::truncated_extension},
      {"extension header cut", hello(b({0, 10, 0})), errc::truncated_extension},
      {"duplicate extension", hello(cat({extension(0xff01, {}), extension(0xff01, {})})),
       errc::duplicate_extension},
      {"two server_name extensions", hello(cat({sni_ext("a.io"), sni_ext("b.io")})),
       errc::duplicate_extension},
      {"server_name empty", hello(extension(0, {})), errc::malformed_server_name},
      {"server_name list empty", hello(extension(0, prefixed(2, {}))), errc::malformed_server_name},
      {"server_name list shorter than ext",
       hello(extension(0, cat({prefixed(2, name_entry(0, text("a.io"))), b({0})}))),
       errc::malformed_server_name},
      {"server_name list longer than ext", hello(extension(0, b({0, 9, 0, 0, 4, 'a'}))),
       errc::malformed_server_name},
      {"host_name runs past list", hello(extension(0, prefixed(2, b({0, 0, 9, 'a', '.', 'i'})))),
       errc::truncated_server_name},
      {"name type without length", hello(extension(0, prefixed(2, b({0})))),
       errc::truncated_server_name},
      {"two host_names",
       hello(extension(
           0, prefixed(2, cat({name_entry(0, text("a.io")), name_entry(0, text("b.io"))})))),
       errc::duplicate_server_name},
      {"empty host_name", hello(extension(0, prefixed(2, name_entry(0, {})))),
       errc::bad_server_name},
      {"NUL in host_name", hello(sni_ext(std::string_view("a\0b.io", 6))), errc::bad_server_name},
      {"UTF-8 host_name", hello(sni_ext("caf\xc3\xa9.io")), errc::bad_server_name},
      {"space in host_name", hello(sni_ext("a b.io")), errc::bad_server_name},
      {"host_name of 256", hello(sni_ext(std::string(256, 'a'))), errc::bad_server_name},
      {"alpn empty protocol", hello(extension(16, prefixed(2, b({0})))), errc::malformed_alpn},
      {"alpn list empty", hello(extension(16, prefixed(2, {}))), errc::malformed_alpn},
      {"alpn list mismatch", hello(extension(16, b({0, 4, 2, 'h', '2'}))), errc::malformed_alpn},
      {"alpn name runs past", hello(extension(16, prefixed(2, b({5, 'h', '2'})))),
       errc::malformed_alpn},
      {"byte after extensions", body(body_with_tail(cat({prefixed(2, sni_ext("a.io")), b({0})}))),
       errc::trailing_bytes},
  };
}

// Proves each bad input is refused with its own errc, and a decode_error-class alert.
TEST(ClientHelloBad, EachCaseHasItsErrc) {
  for (const auto& c : bad_cases()) {
    SCOPED_TRACE(c.name);
    const auto r = parse_client_hello(c.input);
    ASSERT_EQ(r.status, ParseStatus::invalid) << describe(r);
    EXPECT_EQ(r.error, c.expected) << r.error.message();
    EXPECT_FALSE(r.error.message().empty());
    // The verdict is stable when the caller read more than it needed.
    const auto more = parse_client_hello(cat({c.input, repeat(64, 0)}));
    EXPECT_EQ(more.error, c.expected) << more.error.message();
  }
}

// Proves every errc of the table is exercised (so a new errc needs a test case).
TEST(ClientHelloBad, TableCoversEveryErrc) {
  std::vector<bool> covered(static_cast<int>(errc::trailing_bytes) + 1);
  for (const auto& c : bad_cases()) {
    covered[static_cast<int>(c.expected)] = true;
  }
  for (int e = static_cast<int>(errc::not_tls); e <= static_cast<int>(errc::trailing_bytes); ++e) {
    EXPECT_TRUE(covered[e]) << make_error_code(static_cast<errc>(e)).message();
  }
}

// Proves a hand-annotated minimal hello completes, and every prefix of it is need_more.
TEST(ClientHelloGood, MinimalAnnotatedHello) {
  // clang-format off
  const Bytes in = b({
      22, 3, 1, 0, 0x3c,          // record: handshake, TLS 1.0, 60 bytes
      1, 0, 0, 0x38,              // handshake: client_hello, 56 bytes
      3, 3,                       // legacy_version TLS 1.2
      0, 0, 0, 0, 0, 0, 0, 0,     // random (32)
      0, 0, 0, 0, 0, 0, 0, 0,     //
      0, 0, 0, 0, 0, 0, 0, 0,     //
      0, 0, 0, 0, 0, 0, 0, 0,     //
      0,                          // session_id: empty
      0, 2, 0x13, 0x01,           // cipher_suites: TLS_AES_128_GCM_SHA256
      1, 0,                       // compression_methods: null
      0, 13,                      // extensions: 13 bytes
      0, 0, 0, 9,                 //   server_name, 9 bytes
      0, 7,                       //     server_name_list: 7 bytes
      0, 0, 4, 'a', '.', 'i', 'o' //       host_name (0), 4 bytes: "a.io"
  });
  // clang-format on
  const auto r = parse_client_hello(in);
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.server_name, "a.io");
  expect_grind(in);
}

// Proves a hello without an extension block (pre-TLS-1.2 style) completes without SNI.
TEST(ClientHelloGood, NoExtensionBlock) {
  const auto r = parse_client_hello(records(handshake(body_with_tail({}))));
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_FALSE(r.server_name);
}

// Proves unknown server_name types are skipped and the host_name still found.
TEST(ClientHelloGood, UnknownNameTypeSkipped) {
  const Bytes list = cat({b({7}), prefixed(2, text("x")), b({0}), prefixed(2, text("h.io"))});
  const auto r = parse_client_hello(hello(extension(0, prefixed(2, list))));
  ASSERT_EQ(r.status, ParseStatus::complete) << describe(r);
  EXPECT_EQ(r.server_name, "h.io");
}

// Proves non-TLS bytes are refused from the very first byte, before a header is complete.
TEST(ClientHelloNotTls, RefusedFromFirstByte) {
  for (const char* s : {"G", "S", "\x00", "P"}) {
    const auto r = parse_client_hello(text(std::string_view(s, 1)));
    EXPECT_EQ(r.error, errc::not_tls) << s;
    EXPECT_EQ(alert_for(r.error), std::nullopt);
  }
  EXPECT_EQ(parse_client_hello({}).status, ParseStatus::need_more);
  EXPECT_GT(parse_client_hello({}).need_at_least, 0u);
}

// ---- alerts --------------------------------------------------------------------------------

// Proves the errc-to-alert mapping of DESIGN section 4.
TEST(ClientHelloAlert, Mapping) {
  EXPECT_EQ(alert_for(errc::not_tls), std::nullopt);
  EXPECT_EQ(alert_for(errc::sslv2_client_hello), std::nullopt);
  EXPECT_EQ(alert_for(errc::client_hello_too_large), 50);
  EXPECT_EQ(alert_for(errc::record_too_large), 22);
  EXPECT_EQ(alert_for(errc::unsupported_record_version), 70);
  EXPECT_EQ(alert_for(errc::truncated_extension), 50);
  EXPECT_EQ(alert_for(errc::bad_server_name), 50);
  EXPECT_EQ(alert_for(std::make_error_code(std::errc::timed_out)), std::nullopt);
}

// Proves the alert record bytes the router and the SSH side put on the wire.
TEST(ClientHelloAlert, RecordBytes) {
  EXPECT_EQ(gw::make_alert(gw::kAlertUnrecognizedName),
            (std::array<std::byte, 7>{std::byte{21}, std::byte{3}, std::byte{3}, std::byte{0},
                                      std::byte{2}, std::byte{2}, std::byte{112}}));
  EXPECT_EQ(gw::kAlertInternalError, 80);
  EXPECT_EQ(gw::kAlertDecodeError, 50);
  EXPECT_EQ(gw::kAlertRecordOverflow, 22);
}

// ---- ByteReader ----------------------------------------------------------------------------

// Proves failed reads leave the cursor alone and prefixes are checked against the parent.
TEST(ByteReaderTest, BoundsAndPrefixes) {
  const Bytes data = b({0x01, 0x02, 0x03, 0x00, 0x02, 0xaa, 0xbb, 0x05});
  ByteReader r(data);
  std::uint32_t u24 = 0;
  ASSERT_TRUE(r.read_u24(u24));
  EXPECT_EQ(u24, 0x010203u);
  ByteReader sub;
  ASSERT_TRUE(r.read_prefixed_u16(sub));
  EXPECT_EQ(sub.remaining(), 2u);
  std::uint16_t u16 = 0;
  ASSERT_TRUE(sub.read_u16(u16));
  EXPECT_EQ(u16, 0xaabbu);
  EXPECT_FALSE(sub.read_u16(u16));
  EXPECT_FALSE(r.read_prefixed_u8(sub));  // 5 bytes promised, none there
  EXPECT_EQ(r.position(), 7u);
  EXPECT_FALSE(r.skip(2));
  EXPECT_EQ(r.remaining(), 1u);
  EXPECT_FALSE(r.read_u16(u16));
  std::uint8_t u8 = 0;
  ASSERT_TRUE(r.read_u8(u8));
  EXPECT_EQ(u8, 5);
  EXPECT_FALSE(r.read_u8(u8));
  ByteReader big(data);
  EXPECT_FALSE(big.skip(static_cast<std::size_t>(-1)));  // no overflow into success
  EXPECT_EQ(big.position(), 0u);
}

// ---- fuzz seed corpus ----------------------------------------------------------------------

// Proves the seed hellos parse; with SNIGATE_WRITE_CORPUS=DIR it also writes them there
// (tests/fuzz/corpus/client_hello/).
TEST(ClientHelloCorpus, SeedsParseAndCanBeWritten) {
  const std::vector<std::pair<std::string, Bytes>> seeds = {
      {"tls13_sni.bin", openssl_client_hello({.sni = "app.alice.example.com"})},
      {"tls12_no_sni.bin", openssl_client_hello({.max_version = TLS1_2_VERSION})},
      {"tls12_alpn_padding.bin", openssl_client_hello({.max_version = TLS1_2_VERSION,
                                                       .sni = kPaddedName,
                                                       .alpn = {"h2", "http/1.1"},
                                                       .padding = true})},
      {"multi_record.bin",
       records(unframe(openssl_client_hello({.sni = "multi.example.com"})), 100, 3)},
      {"minimal_sni.bin", hello(sni_ext("a.io"))},
  };
  for (const auto& [name, bytes] : seeds) {
    EXPECT_EQ(parse_client_hello(bytes).status, ParseStatus::complete) << name;
  }
  const char* dir = std::getenv("SNIGATE_WRITE_CORPUS");
  if (dir == nullptr) {
    return;
  }
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const Bytes& bytes) {
    std::ofstream out(std::filesystem::path(dir) / name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good()) << name;
  };
  for (const auto& [name, bytes] : seeds) {
    write(name, bytes);
  }
  write("http.bin", text("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n"));
  write("ssh.bin", text("SSH-2.0-OpenSSH_9.2\r\n"));
}

}  // namespace
}  // namespace gw::sni

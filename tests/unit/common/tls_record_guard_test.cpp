// TlsRecordGuard: headers split over any reads, the exact size bound, the type whitelist, and
// that the first application_data header switches it off for good.
#include "common/tls_record_guard.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace gw {
namespace {

using V = TlsRecordGuard::Verdict;

std::vector<std::byte> record(std::uint8_t type, std::size_t length) {
  std::vector<std::byte> r{std::byte{type}, std::byte{3}, std::byte{3},
                           std::byte(static_cast<std::uint8_t>(length >> 8)),
                           std::byte(static_cast<std::uint8_t>(length))};
  r.resize(5 + length, std::byte{0x42});
  return r;
}

std::vector<std::byte> cat(std::initializer_list<std::vector<std::byte>> parts) {
  std::vector<std::byte> all;
  for (const auto& p : parts) {
    all.insert(all.end(), p.begin(), p.end());
  }
  return all;
}

TEST(TlsRecordGuard, AHandshakeInOneReadEndsAtTheFirstApplicationData) {
  TlsRecordGuard g;
  const auto bytes = cat({record(22, 512), record(20, 1), record(22, 40), record(23, 100)});
  EXPECT_EQ(g.feed(bytes), V::done);
  EXPECT_EQ(g.records(), 4u);
}

TEST(TlsRecordGuard, EverySplitGivesTheSameVerdicts) {
  const auto bytes = cat({record(22, 300), record(21, 2), record(22, 7), record(23, 5)});
  for (std::size_t chunk = 1; chunk <= 9; ++chunk) {
    TlsRecordGuard g;
    V last = V::watching;
    for (std::size_t i = 0; i < bytes.size(); i += chunk) {
      const std::size_t n = std::min(chunk, bytes.size() - i);
      last = g.feed(std::span(bytes).subspan(i, n));
      if (i + n < bytes.size() - 5) {
        ASSERT_EQ(last, V::watching) << "chunk " << chunk << " at " << i;
      }
    }
    EXPECT_EQ(last, V::done) << "chunk " << chunk;
    EXPECT_EQ(g.records(), 4u);
  }
}

TEST(TlsRecordGuard, TheCiphertextBoundIsAllowedAndOneMoreIsOverflow) {
  TlsRecordGuard ok;
  EXPECT_EQ(ok.feed(record(22, TlsRecordGuard::kMaxRecordBytes)), V::watching);
  TlsRecordGuard over;
  const auto r = record(22, TlsRecordGuard::kMaxRecordBytes + 1);
  EXPECT_EQ(over.feed(std::span(r).first(5)), V::oversize);  // the header alone decides
  EXPECT_EQ(over.last_length(), TlsRecordGuard::kMaxRecordBytes + 1);
  EXPECT_EQ(TlsRecordGuard::alert_for(V::oversize), 22);
  EXPECT_STREQ(TlsRecordGuard::reason_for(V::oversize), "tls_record_overflow");
}

TEST(TlsRecordGuard, AnOversizeApplicationDataRecordIsStillRefused) {
  TlsRecordGuard g;
  EXPECT_EQ(g.feed(record(23, 0xffff)), V::oversize);
}

TEST(TlsRecordGuard, TypesOutside20To23AreUnexpectedMessageHeartbeatIncluded) {
  for (const int type : {0, 19, 24, 25, 0x16 + 0x80, 255}) {
    TlsRecordGuard g;
    EXPECT_EQ(g.feed(cat({record(22, 10), record(static_cast<std::uint8_t>(type), 3)})),
              V::bad_type)
        << type;
    EXPECT_EQ(g.last_type(), type);
  }
  EXPECT_EQ(TlsRecordGuard::alert_for(V::bad_type), 10);
  EXPECT_STREQ(TlsRecordGuard::reason_for(V::bad_type), "tls_bad_record_type");
  EXPECT_EQ(TlsRecordGuard::alert_for(V::done), 0);
}

TEST(TlsRecordGuard, AfterTheSwitchOffAndAfterARefusalNothingChanges) {
  TlsRecordGuard g;
  ASSERT_EQ(g.feed(record(23, 10)), V::done);
  EXPECT_EQ(g.feed(record(99, 0xffff)), V::done);  // bulk bytes are never looked at
  EXPECT_EQ(g.records(), 1u);
  TlsRecordGuard bad;
  ASSERT_EQ(bad.feed(record(30, 1)), V::bad_type);
  EXPECT_EQ(bad.feed(record(23, 1)), V::bad_type);
}

}  // namespace
}  // namespace gw

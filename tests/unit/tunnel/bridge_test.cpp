// The Bridge's two pipes and its deadlines, driven through a fake Channel over a local socket
// pair: FIN to EOF and EOF to FIN, window 0 stops reads, the down buffer cap stops consumption
// and resumes, the idle and open deadlines, the client leaving while the open is in flight, and
// the invariants after every step. The clock is passed in (check_deadlines), so no test waits
// for a timeout; the io_context is run until a condition holds, bounded in steps.
#include "tunnel/bridge.hpp"

#include <gtest/gtest.h>
#include <spdlog/logger.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <functional>
#include <optional>
#include <vector>

#include "common/tls_alert.hpp"

namespace gw::tunnel {
namespace {

using Local = boost::asio::local::stream_protocol;
using namespace std::chrono_literals;

/// The far end of a channel, controlled by the test.
class FakeChannel final : public Channel {
 public:
  void start(ChannelHandler& handler) override {
    handler_ = &handler;
    started = true;
  }
  std::optional<std::size_t> write(std::span<const std::byte> data) override {
    if (fail_writes) {
      return std::nullopt;
    }
    const std::size_t n = congested ? 0 : std::min(window, data.size());
    received.insert(received.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(n));
    window -= n;
    return n;
  }
  bool blocked() const override { return congested || window == 0; }
  void want_writable() override { wants_writable = true; }
  void resume_reading() override {
    ++resumes;
    deliver();
  }
  bool send_eof() override {
    eof_sent = true;
    return true;
  }
  void close() override {
    closed = true;
    closed_while_opening = !opened;
    handler_ = nullptr;
  }

  // The test's side.
  void open() {
    opened = true;
    handler_->on_channel_opened();
  }
  void refuse() { handler_->on_channel_open_failed(); }
  void grant(std::size_t n) {
    window += n;
    if (wants_writable && handler_ != nullptr) {
      wants_writable = false;
      handler_->on_channel_writable();
    }
  }
  void send(std::span<const std::byte> data) {
    held.insert(held.end(), data.begin(), data.end());
    deliver();
  }
  void peer_eof() { handler_->on_channel_eof(); }
  void peer_close() { handler_->on_channel_closed(); }
  void fail(const char* reason) { handler_->on_channel_failed(reason); }

  bool started = false, opened = false, eof_sent = false, closed = false;
  bool closed_while_opening = false, wants_writable = false, congested = false;
  bool fail_writes = false;
  std::size_t window = 1 << 30;
  int resumes = 0;
  std::vector<std::byte> received;  ///< what the bridge sent up
  std::vector<std::byte> held;      ///< sent by the far end, not yet taken by the bridge

 private:
  void deliver() {
    if (handler_ == nullptr || held.empty()) {
      return;
    }
    const std::size_t taken = handler_->on_channel_data(held);
    held.erase(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(taken));
  }
  ChannelHandler* handler_ = nullptr;
};

std::vector<std::byte> bytes(std::size_t n, std::uint8_t seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  }
  return v;
}

class BridgeTest : public ::testing::Test {
 protected:
  void make(std::vector<std::byte> peeked = {}, BufferBudgets budgets = {}) {
    Local::socket ours(ioc_);
    boost::asio::local::connect_pair(ours, client_);
    client_.non_blocking(true);
    channel_ = std::make_shared<FakeChannel>();
    peeked_ = peeked.size();
    config_.idle_timeout = 300s;
    config_.open_timeout = 10s;
    config_.tls_handshake_timeout = handshake_timeout_;
    ConnectionStart start{7,
                          "192.0.2.1",
                          40000,
                          "app.example.test",
                          std::chrono::steady_clock::now(),
                          std::chrono::system_clock::now(),
                          {}};
    bridge_ = std::make_shared<Bridge>(
        Bridge::Socket(std::move(ours)), std::move(peeked), start,
        EndpointLabel{"ep_1", "tls://app.example.test", 3, "SHA256:x", "alice"}, channel_, config_,
        stats_, std::make_shared<spdlog::logger>("test"),
        [this](const ConnectionClosed& ev) { records_.push_back(ev); }, std::move(budgets));
    bridge_->start();
    check_invariants();
  }

  /// Runs handlers until `done` holds (bounded), checking the invariants after each one.
  bool drive(const std::function<bool()>& done, int max_steps = 5000) {
    for (int i = 0; i < max_steps; ++i) {
      if (done()) {
        return true;
      }
      ioc_.restart();
      ioc_.run_one_for(2ms);
      check_invariants();
    }
    return done();
  }
  void settle() {
    drive([] { return false; }, 50);
  }

  void check_invariants() {
    const auto& b = *bridge_;
    EXPECT_LE(b.down_buffered(), config_.down_buffer_cap);
    EXPECT_LE(b.up_buffered(), std::max<std::size_t>(peeked_, 64 * 1024));
    EXPECT_LE(records_.size(), 1u) << "one record per connection";
    if (b.finished()) {
      EXPECT_EQ(b.channel_state(), Bridge::ChannelState::released);
      EXPECT_EQ(b.up_state(), Bridge::UpState::closed);
      EXPECT_EQ(b.down_state(), Bridge::DownState::closed);
      EXPECT_EQ(b.up_buffered() + b.down_buffered(), 0u);
      EXPECT_TRUE(channel_->closed);
      EXPECT_EQ(records_.size(), 1u);
      EXPECT_EQ(stats_->connections_active.load(), 0);
    } else {
      EXPECT_FALSE(channel_->closed);
      EXPECT_EQ(stats_->connections_active.load(), 1);
    }
    if (b.channel_state() == Bridge::ChannelState::opening) {
      EXPECT_TRUE(channel_->received.empty()) << "nothing goes up before the open";
    }
  }

  void client_write(std::span<const std::byte> data) {
    std::size_t done = 0;
    ASSERT_TRUE(drive([&] {
      boost::system::error_code ec;
      done += client_.write_some(boost::asio::buffer(data.data() + done, data.size() - done), ec);
      return done == data.size();
    }));
  }
  /// Reads what is there now; sets eof_ at end of stream.
  std::vector<std::byte> client_read_available() {
    std::vector<std::byte> out;
    std::array<std::byte, 65536> buf;
    for (;;) {
      boost::system::error_code ec;
      const std::size_t n = client_.read_some(boost::asio::buffer(buf), ec);
      out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
      if (ec == boost::asio::error::eof) {
        eof_ = true;
        return out;
      }
      if (ec) {
        return out;
      }
    }
  }
  /// Reads until `n` bytes arrived (bounded).
  std::vector<std::byte> client_read_until_eof_or(std::size_t n) {
    std::vector<std::byte> all;
    drive([&] {
      auto got = client_read_available();
      all.insert(all.end(), got.begin(), got.end());
      return eof_ || all.size() >= n;
    });
    return all;
  }
  std::vector<std::byte> client_read_until_eof() {
    std::vector<std::byte> all;
    EXPECT_TRUE(drive([&] {
      auto got = client_read_available();
      all.insert(all.end(), got.begin(), got.end());
      return eof_;
    }));
    return all;
  }

  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      ioc_.get_executor()};
  Local::socket client_{ioc_};
  std::shared_ptr<FakeChannel> channel_;
  std::shared_ptr<BridgeStats> stats_ = std::make_shared<BridgeStats>();
  BridgeConfig config_;
  std::shared_ptr<Bridge> bridge_;
  std::vector<ConnectionClosed> records_;
  std::size_t peeked_ = 0;
  bool eof_ = false;
  /// Off unless a test turns it on: the other tests pump bytes that are not TLS records.
  std::chrono::seconds handshake_timeout_{0};
};

/// A TLS record header of `type` announcing `length` bytes, and that many bytes.
std::vector<std::byte> tls_record(std::uint8_t type, std::size_t length) {
  std::vector<std::byte> r{std::byte{type}, std::byte{3}, std::byte{3},
                           std::byte(static_cast<std::uint8_t>(length >> 8)),
                           std::byte(static_cast<std::uint8_t>(length))};
  r.resize(5 + length, std::byte{7});
  return r;
}

TEST_F(BridgeTest, PeekedBytesGoUpFirstOnceOpenedThenSocketBytes) {
  make(bytes(517, 1));
  client_write(bytes(1000, 2));
  settle();
  EXPECT_TRUE(channel_->received.empty());
  channel_->open();
  ASSERT_TRUE(drive([&] { return channel_->received.size() == 1517; }));
  auto want = bytes(517, 1);
  const auto more = bytes(1000, 2);
  want.insert(want.end(), more.begin(), more.end());
  EXPECT_EQ(channel_->received, want);
}

TEST_F(BridgeTest, ClientFinBecomesChannelEofAfterPendingBytes) {
  make(bytes(300, 3));
  channel_->window = 100;  // the peeked bytes can't all go at once
  channel_->open();
  client_.shutdown(Local::socket::shutdown_send);
  settle();
  EXPECT_FALSE(channel_->eof_sent) << "EOF must wait for the pending bytes";
  channel_->grant(1000);
  ASSERT_TRUE(drive([&] { return channel_->eof_sent; }));
  EXPECT_EQ(channel_->received.size(), 300u);
  EXPECT_EQ(bridge_->up_state(), Bridge::UpState::eof_sent);
  EXPECT_FALSE(bridge_->finished()) << "the other direction is still open";
}

TEST_F(BridgeTest, ChannelEofBecomesFinAfterEveryByteAndBothClosedFinishes) {
  make();
  channel_->open();
  const auto down = bytes(100000, 4);
  channel_->send(down);
  channel_->peer_eof();
  EXPECT_EQ(client_read_until_eof(), down);
  EXPECT_EQ(bridge_->down_state(), Bridge::DownState::shutdown_sent);
  client_.shutdown(Local::socket::shutdown_send);
  ASSERT_TRUE(drive([&] { return bridge_->finished(); }));
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].close_reason, "closed");
  EXPECT_EQ(records_[0].bytes_out, down.size());
  EXPECT_EQ(records_[0].endpoint_id, "ep_1");
  EXPECT_EQ(records_[0].session_id, 3u);
  EXPECT_EQ(records_[0].conn_id, 7u);
}

TEST_F(BridgeTest, WindowZeroStopsReadingTheSocketAndAGrantResumes) {
  make();
  channel_->window = 0;
  channel_->open();
  const auto up = bytes(200000, 5);
  std::size_t written = 0;
  // Write as much as the socket takes: with the window shut, the bridge must not read it.
  drive([&] {
    boost::system::error_code ec;
    written += client_.write_some(
        boost::asio::buffer(up.data() + written, std::min<std::size_t>(65536, up.size() - written)),
        ec);
    return ec == boost::asio::error::would_block || written == up.size();
  });
  settle();
  EXPECT_TRUE(channel_->received.empty());
  EXPECT_TRUE(channel_->wants_writable);
  EXPECT_EQ(bridge_->up_buffered(), 0u) << "nothing read while the window is shut";
  channel_->grant(1 << 30);
  ASSERT_TRUE(drive([&] {
    boost::system::error_code ec;
    if (written < up.size()) {
      written +=
          client_.write_some(boost::asio::buffer(up.data() + written, up.size() - written), ec);
    }
    return channel_->received.size() == up.size();
  }));
  EXPECT_EQ(channel_->received, up);
}

TEST_F(BridgeTest, DownCapStopsConsumptionUntilTheClientReadsThenEverythingArrivesInOrder) {
  make();
  channel_->open();
  const auto down = bytes(4 << 20, 6);  // far more than the cap plus the socket buffers
  channel_->send(down);
  settle();
  EXPECT_TRUE(bridge_->down_refused());
  EXPECT_FALSE(channel_->held.empty()) << "the channel keeps what the bridge refused";
  EXPECT_EQ(bridge_->down_buffered(), config_.down_buffer_cap);
  const auto resumes_before = channel_->resumes;
  std::vector<std::byte> got;
  ASSERT_TRUE(drive(
      [&] {
        auto chunk = client_read_available();
        got.insert(got.end(), chunk.begin(), chunk.end());
        return got.size() == down.size();
      },
      20000));
  EXPECT_EQ(got, down);
  EXPECT_GT(channel_->resumes, resumes_before);
  EXPECT_TRUE(channel_->held.empty());
  EXPECT_FALSE(bridge_->down_refused());
}

TEST_F(BridgeTest, WhatTheDownBufferHoldsCountsAgainstItsBudgetsUntilTheClientReads) {
  auto endpoint = std::make_shared<BufferBudget>(64 * 1024);
  auto key = std::make_shared<BufferBudget>(1 << 30);
  make({}, BufferBudgets{endpoint, key});
  channel_->open();
  EXPECT_FALSE(bridge_->stalled_since()) << "holds nothing: keeping up";
  const auto down = bytes(4 << 20, 9);
  channel_->send(down);
  settle();
  EXPECT_EQ(endpoint->held(), static_cast<std::int64_t>(bridge_->down_buffered()));
  EXPECT_EQ(key->held(), endpoint->held());
  EXPECT_TRUE(endpoint->over()) << "256 KiB held against a 64 KiB budget";
  EXPECT_FALSE(key->over());
  ASSERT_TRUE(bridge_->stalled_since());
  EXPECT_LE(*bridge_->stalled_since(), std::chrono::steady_clock::now());
  std::vector<std::byte> got;
  ASSERT_TRUE(drive(
      [&] {
        auto chunk = client_read_available();
        got.insert(got.end(), chunk.begin(), chunk.end());
        return got.size() == down.size();
      },
      20000));
  EXPECT_EQ(endpoint->held(), 0);
  EXPECT_FALSE(bridge_->stalled_since());
  channel_->send(bytes(4 << 20, 10));
  settle();
  EXPECT_GT(key->held(), 0);
  bridge_->abort("test");
  EXPECT_EQ(endpoint->held(), 0) << "a finished connection gives its bytes back at once";
  EXPECT_EQ(key->held(), 0);
}

TEST(HeldBytes, ReportsDifferencesToBothBudgetsAndGivesBackWhenGone) {
  auto a = std::make_shared<BufferBudget>(100);
  auto b = std::make_shared<BufferBudget>(1000);
  {
    HeldBytes one(BufferBudgets{a, b});
    HeldBytes two(BufferBudgets{a, nullptr});
    one.set(60);
    two.set(50);
    EXPECT_EQ(a->held(), 110);
    EXPECT_EQ(b->held(), 60);
    EXPECT_TRUE(a->over());
    EXPECT_TRUE(one.over()) << "either budget over";
    one.set(10);
    EXPECT_EQ(a->held(), 60);
    EXPECT_FALSE(one.over());
  }
  EXPECT_EQ(a->held(), 0);
  EXPECT_EQ(b->held(), 0);
}

TEST_F(BridgeTest, IdleDeadlineEachWay) {
  make();
  channel_->open();
  const auto now = std::chrono::steady_clock::now();
  bridge_->check_deadlines(now + 299s);
  EXPECT_FALSE(bridge_->finished());
  bridge_->check_deadlines(now + 301s);
  EXPECT_TRUE(bridge_->finished());
  check_invariants();
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].close_reason, "idle_client");
  client_read_until_eof();
}

TEST_F(BridgeTest, OpenDeadlineSendsInternalErrorAndHandsTheOpenToTheChannel) {
  make();
  const auto now = std::chrono::steady_clock::now();
  bridge_->check_deadlines(now + 9s);
  EXPECT_FALSE(bridge_->finished());
  bridge_->check_deadlines(now + 11s);
  EXPECT_TRUE(bridge_->finished());
  EXPECT_TRUE(channel_->closed_while_opening) << "the channel decides what an abandoned open needs";
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].close_reason, "upstream_timeout");
  const auto alert = gw::make_alert(gw::kAlertInternalError);
  EXPECT_EQ(records_[0].bytes_out, alert.size());
  const auto got = client_read_until_eof();
  EXPECT_TRUE(std::equal(got.begin(), got.end(), alert.begin(), alert.end()));
  EXPECT_EQ(stats_->channel_open_failures.load(), 1u);
}

TEST_F(BridgeTest, RefusedOpenSendsInternalError) {
  make();
  channel_->refuse();
  EXPECT_TRUE(bridge_->finished());
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].close_reason, "upstream_refused");
  EXPECT_EQ(records_[0].bytes_out, gw::make_alert(gw::kAlertInternalError).size());
  EXPECT_EQ(client_read_until_eof().size(), gw::make_alert(0).size());
}

TEST_F(BridgeTest, ClientLeavingWhileTheOpenIsInFlight) {
  make(bytes(200, 7));
  client_.close();
  settle();
  EXPECT_FALSE(bridge_->finished()) << "the socket is not read before the open";
  bridge_->abort("session_closed");
  EXPECT_TRUE(channel_->closed_while_opening);
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].bytes_in, 200u) << "the ClientHello counts as client bytes";
}

TEST_F(BridgeTest, ClientLeavingAfterTheOpenEndsWithEofThenUpstreamClose) {
  make();
  channel_->open();
  client_.shutdown(Local::socket::shutdown_send);
  ASSERT_TRUE(drive([&] { return channel_->eof_sent; }));
  channel_->peer_close();
  ASSERT_TRUE(drive([&] { return bridge_->finished(); }));
  EXPECT_EQ(records_[0].close_reason, "closed");
}

TEST_F(BridgeTest, ClientResetEndsTheConnection) {
  make();
  channel_->open();
  channel_->send(bytes(10, 8));
  client_.close();
  channel_->send(bytes(1 << 20, 9));  // writing to a gone client fails
  ASSERT_TRUE(drive([&] { return bridge_->finished(); }));
  EXPECT_EQ(records_[0].close_reason, "client_reset");
}

TEST_F(BridgeTest, ChannelWriteFailureEndsTheConnection) {
  make();
  channel_->fail_writes = true;
  channel_->open();
  client_write(bytes(10, 10));
  ASSERT_TRUE(drive([&] { return bridge_->finished(); }));
  EXPECT_EQ(records_[0].close_reason, "channel_write_failed");
}

TEST_F(BridgeTest, ChannelFailureEndsTheConnectionWithItsReason) {
  make();
  channel_->open();
  channel_->send(bytes(1000, 11));
  channel_->fail("window_violation");
  EXPECT_TRUE(bridge_->finished());
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].close_reason, "window_violation");
}

// ---- the handshake watch (common/tls_record_guard.hpp) ----------------------------------

TEST_F(BridgeTest, HandshakeDeadlineClosesWithItsOwnReasonAndCounts) {
  handshake_timeout_ = 60s;
  make(tls_record(22, 200));
  channel_->open();
  client_write(tls_record(22, 30));  // still handshaking
  ASSERT_TRUE(drive([&] { return channel_->received.size() == 205 + 35; }));
  EXPECT_TRUE(bridge_->watching_handshake());
  const auto now = std::chrono::steady_clock::now();
  bridge_->check_deadlines(now + 59s);
  EXPECT_FALSE(bridge_->finished());
  bridge_->check_deadlines(now + 61s);
  EXPECT_TRUE(bridge_->finished());
  check_invariants();
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].close_reason, "tls_handshake_timeout");
  EXPECT_EQ(stats_->tls_handshake_timeouts.load(), 1u);
  EXPECT_TRUE(client_read_until_eof().empty()) << "no alert: there is none for a slow handshake";
}

TEST_F(BridgeTest, TheFirstApplicationDataEndsTheWatchAndTheDeadline) {
  handshake_timeout_ = 60s;
  make(tls_record(22, 200));
  channel_->open();
  auto more = tls_record(20, 1);
  const auto data = tls_record(23, 40);
  more.insert(more.end(), data.begin(), data.end());
  // Bulk bytes after it are no records at all: the guard must not be reading them.
  const auto bulk = bytes(70000, 3);
  more.insert(more.end(), bulk.begin(), bulk.end());
  client_write(more);
  ASSERT_TRUE(drive([&] { return channel_->received.size() == 205 + more.size(); }));
  EXPECT_FALSE(bridge_->watching_handshake());
  bridge_->check_deadlines(std::chrono::steady_clock::now() + 61s);
  EXPECT_FALSE(bridge_->finished());
}

TEST_F(BridgeTest, AnOversizeRecordBeforeAnythingWentDownGetsRecordOverflow) {
  handshake_timeout_ = 60s;
  make(tls_record(22, 200));
  channel_->open();
  const auto big = tls_record(22, (1u << 14) + 2049);
  client_write(std::span(big).first(5000));
  ASSERT_TRUE(drive([&] { return bridge_->finished(); }));
  check_invariants();
  EXPECT_EQ(channel_->received.size(), 205u) << "the refused bytes never go up";
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].close_reason, "tls_record_overflow");
  EXPECT_EQ(stats_->tls_record_overflows.load(), 1u);
  const auto alert = gw::make_alert(gw::kAlertRecordOverflow);
  const auto got = client_read_until_eof();
  EXPECT_TRUE(std::equal(got.begin(), got.end(), alert.begin(), alert.end()));
}

TEST_F(BridgeTest, ABadTypeInThePeekIsUnexpectedMessage) {
  handshake_timeout_ = 60s;
  auto peeked = tls_record(22, 100);
  const auto heartbeat = tls_record(24, 3);
  peeked.insert(peeked.end(), heartbeat.begin(), heartbeat.end());
  make(peeked);
  ASSERT_TRUE(drive([&] { return bridge_->finished(); }));
  EXPECT_TRUE(channel_->received.empty());
  ASSERT_EQ(records_.size(), 1u);
  EXPECT_EQ(records_[0].close_reason, "tls_bad_record_type");
  EXPECT_EQ(stats_->tls_bad_record_types.load(), 1u);
  const auto alert = gw::make_alert(gw::kAlertUnexpectedMessage);
  const auto got = client_read_until_eof();
  EXPECT_TRUE(std::equal(got.begin(), got.end(), alert.begin(), alert.end()));
}

TEST_F(BridgeTest, ARefusalAfterTheServerSpokeIsAPlainClose) {
  handshake_timeout_ = 60s;
  make(tls_record(22, 200));
  channel_->open();
  const auto server_hello = tls_record(22, 90);
  channel_->send(server_hello);
  ASSERT_EQ(client_read_until_eof_or(server_hello.size()).size(), server_hello.size());
  client_write(tls_record(99, 1));
  ASSERT_TRUE(drive([&] { return bridge_->finished(); }));
  EXPECT_EQ(records_[0].close_reason, "tls_bad_record_type");
  EXPECT_EQ(records_[0].bytes_out, server_hello.size()) << "no plaintext alert after ServerHello";
  EXPECT_TRUE(client_read_until_eof().empty());
}

}  // namespace
}  // namespace gw::tunnel

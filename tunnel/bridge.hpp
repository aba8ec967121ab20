// Bridge: one routed public connection piped to one Channel (tunnel/channel.hpp), from the
// moment its endpoint's owner takes it until both sides are done, and the one connection
// record (ConnectionClosed) that results.
//
// Two one-way pipes, each a validated state machine:
//   up   (public -> channel): read the socket only while the channel can take bytes; what it
//        leaves waits in up_pending_ and reading stops until on_channel_writable(). FIN
//        becomes channel EOF once pending bytes are sent.
//   down (channel -> public): channel data goes straight to the socket; what the socket
//        won't take waits in a buffer capped at down_buffer_cap, beyond which the bridge takes
//        nothing (the channel keeps the bytes and withholds its window: real back-pressure)
//        until the socket drains and resume_reading() is called. Channel EOF becomes
//        shutdown(send).
// Memory per connection is bounded by the cap plus what the channel holds, whatever the peers
// do; an idle connection holds no transfer buffer (reads go through a per-thread scratch).
// What the down buffer holds also counts against the endpoint's and key's BufferBudgets
// (tunnel/buffer_budget.hpp); the owner closes stalled connections when one is over.
//
// The public side is a PublicStream (tunnel/public_stream.hpp): the visitor's socket, or on a
// cluster owner node the relay's TLS stream; the pump is the same for both.
//
// Runs on the socket's thread only; knows nothing of SSH. Deliberately no retries: a channel
// the far end refuses gets a TLS internal_error alert and the connection ends. Deadlines are
// checked by the owner's timer through check_deadlines(), so tests can drive the clock.
//
// Until the client's handshake is over (its first application_data record) the up bytes also
// go through a TlsRecordGuard (common/tls_record_guard.hpp) and the handshake has a deadline
// (BridgeConfig::tls_handshake_timeout); after that the guard is off and reads go straight to
// the channel, with no per-record work (docs/security.md).
#pragma once

#include <atomic>
#include <boost/asio/generic/stream_protocol.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/histogram.hpp"
#include "common/tls_record_guard.hpp"
#include "tunnel/buffer_budget.hpp"
#include "tunnel/channel.hpp"
#include "tunnel/events.hpp"
#include "tunnel/public_stream.hpp"

namespace spdlog {
class logger;
}

namespace gw::tunnel {

/// Gateway-wide counters the bridges move (relaxed atomics: any thread). /metrics reads them.
struct BridgeStats {
  std::atomic<std::int64_t> connections_active{0};
  std::atomic<std::uint64_t> bytes_in{0};               ///< public client -> upstream, as it flows
  std::atomic<std::uint64_t> bytes_out{0};              ///< upstream -> public client, as it flows
  std::atomic<std::uint64_t> channel_open_failures{0};  ///< refused or timed out
  /// Closed before the client's handshake was over: past the deadline, or a record refused.
  std::atomic<std::uint64_t> tls_handshake_timeouts{0};
  std::atomic<std::uint64_t> tls_record_overflows{0};
  std::atomic<std::uint64_t> tls_bad_record_types{0};
  LatencyHistogram channel_open_latency{kLatencyBuckets};
};

struct BridgeConfig {
  using Duration = std::chrono::steady_clock::duration;
  Duration idle_timeout = std::chrono::minutes(5);  ///< each way on its own
  /// How long the far end may take to answer the open (an ssh client connects to its upstream
  /// first); one that never answers must not hold public connections forever.
  Duration open_timeout = std::chrono::seconds(10);
  /// Bytes a stalled public reader may leave with us before we stop taking channel data.
  std::size_t down_buffer_cap = 256 * 1024;
  /// Most bytes moved up per wake-up, so one busy client can't starve others on this thread.
  std::size_t up_budget = 512 * 1024;
  /// From the ClientHello to the client's first application_data record; zero turns the
  /// handshake watch off altogether (no deadline and no record checks).
  Duration tls_handshake_timeout = std::chrono::seconds(60);
};

class Bridge final : public std::enable_shared_from_this<Bridge>, private ChannelHandler {
 public:
  using Socket = boost::asio::generic::stream_protocol::socket;
  enum class ChannelState { opening, open, failed, released };
  enum class UpState { open, eof_pending, eof_sent, closed };
  enum class DownState { open, eof_pending, shutdown_sent, closed };
  /// Called once, when the connection has ended, with its record (owner fields filled from the
  /// label). The bridge may still be on the stack: the owner must not destroy it from inside.
  using OnClosed = std::function<void(const ConnectionClosed&)>;

  /// `peeked`: bytes already read from the stream (the ClientHello), sent up first.
  Bridge(std::unique_ptr<PublicStream> stream, std::vector<std::byte> peeked, ConnectionStart start,
         EndpointLabel label, std::shared_ptr<Channel> channel, const BridgeConfig& config,
         std::shared_ptr<BridgeStats> stats, std::shared_ptr<spdlog::logger> log,
         OnClosed on_closed, BufferBudgets budgets = {});
  /// The same over a plain socket (the single-node path).
  Bridge(Socket socket, std::vector<std::byte> peeked, ConnectionStart start, EndpointLabel label,
         std::shared_ptr<Channel> channel, const BridgeConfig& config,
         std::shared_ptr<BridgeStats> stats, std::shared_ptr<spdlog::logger> log,
         OnClosed on_closed, BufferBudgets budgets = {})
      : Bridge(std::make_unique<SocketStream>(std::move(socket)), std::move(peeked),
               std::move(start), std::move(label), std::move(channel), config, std::move(stats),
               std::move(log), std::move(on_closed), std::move(budgets)) {}
  ~Bridge() override;
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  /// Starts the channel's open; data flows once it is opened.
  void start();
  /// Ends the connection now (session closing, shutdown).
  void abort(const char* reason);
  /// The open deadline while opening, then the idle timeout each way. Call now and then.
  void check_deadlines(std::chrono::steady_clock::time_point now);

  std::uint64_t id() const { return start_.conn_id; }
  bool finished() const { return finished_; }
  ChannelState channel_state() const { return channel_state_; }
  UpState up_state() const { return up_; }
  DownState down_state() const { return down_; }
  /// Bytes held in our buffers (each bounded: see the file comment).
  std::size_t up_buffered() const { return up_pending_.size(); }
  std::size_t down_buffered() const { return down_pending_.size(); }
  /// True until the client's first application_data record (or a refusal): the guard reads
  /// the up bytes. Always false with tls_handshake_timeout zero.
  bool watching_handshake() const { return watching_; }
  /// True while the bridge took less than the channel offered and waits to resume it.
  bool down_refused() const { return down_refused_; }
  /// Since when the public client has taken none of the bytes we hold for it; nullopt while
  /// we hold none (then it is keeping up).
  std::optional<std::chrono::steady_clock::time_point> stalled_since() const {
    if (down_pending_.empty()) {
      return std::nullopt;
    }
    return last_drained_;
  }

 private:
  // ChannelHandler
  void on_channel_opened() override;
  void on_channel_open_failed() override;
  std::size_t on_channel_data(std::span<const std::byte> data) override;
  void on_channel_eof() override;
  void on_channel_closed() override;
  void on_channel_writable() override;
  void on_channel_failed(const char* reason) override;

  void pull_up();
  bool push_up_pending();
  void send_up_eof();
  void flush_down();
  void arm_read();
  void arm_write();
  void maybe_finish();
  void finish(const char* reason);
  /// finish() from a place that may be inside a channel call: posted, never synchronous.
  void finish_later(const char* reason);
  /// The client's end refused a write: one last read of what it sent before closing, passed
  /// on (see finish()).
  void salvage_up();
  void set_up(UpState next);
  void set_down(DownState next);
  void set_channel(ChannelState next);
  /// The handshake watch over bytes about to go up: false if it refused them (then finished,
  /// or with `later` finishing after this turn: start() may not finish at once).
  bool check_records(std::span<const std::byte> bytes, bool later);
  /// Counts, logs and picks the alert for a refused record.
  void note_refusal(TlsRecordGuard::Verdict verdict);
  void count_up(std::uint64_t n);
  void count_down(std::uint64_t n);
  /// After down_pending_ changed: its size to the budgets.
  void update_held() { down_held_.set(down_pending_.size()); }

  std::unique_ptr<PublicStream> stream_;
  ConnectionStart start_;
  EndpointLabel label_;
  std::shared_ptr<Channel> channel_;
  BridgeConfig config_;
  std::shared_ptr<BridgeStats> stats_;
  std::shared_ptr<spdlog::logger> log_;
  OnClosed on_closed_;

  ChannelState channel_state_ = ChannelState::opening;
  UpState up_ = UpState::open;
  DownState down_ = DownState::open;
  std::vector<std::byte> up_pending_;    ///< read (or peeked) but not yet taken by the channel
  std::vector<std::byte> down_pending_;  ///< from the channel, not yet taken by the socket
  bool down_refused_ = false;            ///< took less than offered: resume_reading() later
  bool peer_closed_channel_ = false;
  bool read_armed_ = false;
  bool write_armed_ = false;
  bool finished_ = false;
  bool finish_posted_ = false;
  bool salvage_up_ = false;  ///< a write to the client failed: finish() calls salvage_up()
  bool counted_active_ = false;
  bool watching_ = false;         ///< the handshake watch is on: see watching_handshake()
  std::uint8_t close_alert_ = 0;  ///< nonzero: finish() sends this alert before closing
  TlsRecordGuard guard_;
  std::uint64_t bytes_up_ = 0;
  std::uint64_t bytes_down_ = 0;
  std::chrono::steady_clock::time_point open_sent_;
  std::chrono::steady_clock::time_point handshake_started_;  ///< the ClientHello was read
  std::chrono::steady_clock::time_point last_up_;
  std::chrono::steady_clock::time_point last_down_;
  std::chrono::steady_clock::time_point last_drained_;  ///< the socket last took bytes
  HeldBytes down_held_;                                 ///< down_pending_, to the budgets
};

}  // namespace gw::tunnel

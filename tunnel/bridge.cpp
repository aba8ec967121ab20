#include "tunnel/bridge.hpp"

#include <spdlog/logger.h>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <cassert>

#include "common/tls_alert.hpp"

namespace gw::tunnel {
namespace {

/// One read from the public socket.
constexpr std::size_t kScratchBytes = 64 * 1024;

/// Reads go through one buffer per thread, so idle connections hold no transfer buffer.
std::byte* scratch() {
  thread_local std::array<std::byte, kScratchBytes> buffer;
  return buffer.data();
}

/// State names for the logs, in enum order.
template <class State, std::size_t N>
const char* name_of(State s, const std::array<const char*, N>& names) {
  const auto i = static_cast<std::size_t>(s);
  return i < N ? names[i] : "?";
}
const char* to_string(Bridge::UpState s) {
  return name_of(s, std::array{"open", "eof_pending", "eof_sent", "closed"});
}
const char* to_string(Bridge::DownState s) {
  return name_of(s, std::array{"open", "eof_pending", "shutdown_sent", "closed"});
}
const char* to_string(Bridge::ChannelState s) {
  return name_of(s, std::array{"opening", "open", "failed", "released"});
}

/// Each pipe only moves forward (open, then its EOF steps, then closed); skipping steps is
/// allowed (a reset closes at once), going back is a bug.
template <class State>
bool moves_forward(State from, State to) {
  return static_cast<int>(to) > static_cast<int>(from);
}
bool channel_may_move(Bridge::ChannelState from, Bridge::ChannelState to) {
  using S = Bridge::ChannelState;
  switch (from) {
    case S::opening:
      return to != S::opening;
    case S::open:
    case S::failed:
      return to == S::released;
    case S::released:
      return false;
  }
  return false;
}

}  // namespace

Bridge::Bridge(std::unique_ptr<PublicStream> stream, std::vector<std::byte> peeked,
               ConnectionStart start, EndpointLabel label, std::shared_ptr<Channel> channel,
               const BridgeConfig& config, std::shared_ptr<BridgeStats> stats,
               std::shared_ptr<spdlog::logger> log, OnClosed on_closed, BufferBudgets budgets)
    : stream_(std::move(stream)),
      start_(std::move(start)),
      label_(std::move(label)),
      channel_(std::move(channel)),
      config_(config),
      stats_(std::move(stats)),
      log_(std::move(log)),
      on_closed_(std::move(on_closed)),
      up_pending_(std::move(peeked)),
      down_held_(std::move(budgets)) {
  last_up_ = last_down_ = open_sent_ = last_drained_ = handshake_started_ =
      std::chrono::steady_clock::now();
  watching_ = config_.tls_handshake_timeout.count() > 0;
}

Bridge::~Bridge() = default;

namespace {

/// The one place a pipe's or the channel's state changes: checked against `valid`, logged.
template <class State>
void transition(spdlog::logger& log, std::uint64_t id, const char* what, State& current, State next,
                bool valid) {
  if (!valid) {
    log.error("bridge.bad_transition conn=t{} {} {} -> {}", id, what, to_string(current),
              to_string(next));
    assert(false && "Bridge: invalid state transition");
    return;
  }
  log.debug("bridge.{} conn=t{} {} -> {}", what, id, to_string(current), to_string(next));
  current = next;
}

}  // namespace

void Bridge::set_up(UpState next) {
  transition(*log_, id(), "up", up_, next, moves_forward(up_, next));
}

void Bridge::set_down(DownState next) {
  transition(*log_, id(), "down", down_, next, moves_forward(down_, next));
}

void Bridge::set_channel(ChannelState next) {
  transition(*log_, id(), "channel", channel_state_, next, channel_may_move(channel_state_, next));
}

void Bridge::start() {
  stats_->connections_active++;
  counted_active_ = true;
  count_up(up_pending_.size());  // the ClientHello the router read counts as client bytes
  open_sent_ = std::chrono::steady_clock::now();
  channel_->start(*this);
  // The router parsed the ClientHello, but the peek may hold more records than that one.
  if (watching_ && !finished_) {
    check_records(up_pending_, /*later=*/true);  // we may be inside the owner's call: finish later
  }
}

void Bridge::on_channel_opened() {
  if (finished_) {
    return;
  }
  set_channel(ChannelState::open);
  stats_->channel_open_latency.observe(std::chrono::steady_clock::now() - open_sent_);
  pull_up();
}

void Bridge::on_channel_open_failed() {
  if (finished_) {
    return;
  }
  set_channel(ChannelState::failed);
  stats_->channel_open_failures++;
  log_->warn(
      "bridge.open_refused conn=t{} sni={} client={} reason=\"the far end refused the channel: "
      "is the upstream of its -R running?\"",
      id(), start_.server_name, start_.client_ip);
  finish("upstream_refused");
}

void Bridge::on_channel_writable() { pull_up(); }

void Bridge::on_channel_failed(const char* reason) {
  log_->warn("bridge.channel_failed conn=t{} sni={} client={} reason={}", id(), start_.server_name,
             start_.client_ip, reason);
  finish(reason);
}

// ---- up: public socket -> channel ------------------------------------------------------

bool Bridge::push_up_pending() {
  const auto n = channel_->write(up_pending_);
  if (!n) {
    finish("channel_write_failed");
    return false;
  }
  up_pending_.erase(up_pending_.begin(), up_pending_.begin() + static_cast<std::ptrdiff_t>(*n));
  if (up_pending_.empty()) {
    std::vector<std::byte>().swap(up_pending_);  // an idle connection holds no buffer
    return true;
  }
  return false;
}

void Bridge::pull_up() {
  if (finished_ || finish_posted_ || channel_state_ != ChannelState::open) {
    return;
  }
  if (!up_pending_.empty() && !push_up_pending()) {
    if (!finished_) {
      channel_->want_writable();  // window or transport full: on_channel_writable() resumes
    }
    return;
  }
  if (up_ == UpState::eof_pending) {
    send_up_eof();
    return;
  }
  if (up_ != UpState::open || read_armed_) {
    return;
  }
  std::size_t moved = 0;
  while (moved < config_.up_budget) {
    if (channel_->blocked()) {
      channel_->want_writable();
      return;
    }
    const auto r = stream_->read_some(std::span<std::byte>(scratch(), kScratchBytes));
    if (r.status == PublicStream::Io::would_block) {
      arm_read();
      return;
    }
    if (r.status == PublicStream::Io::eof) {
      set_up(UpState::eof_pending);
      send_up_eof();
      return;
    }
    if (r.status != PublicStream::Io::ok) {
      finish("client_reset");
      return;
    }
    const std::size_t n = r.bytes;
    last_up_ = std::chrono::steady_clock::now();
    count_up(n);
    // One predictable branch per read once the handshake is over: the guard is off then.
    if (watching_ && !check_records(std::span<const std::byte>(scratch(), n), /*later=*/false)) {
      return;
    }
    const auto w = channel_->write(std::span<const std::byte>(scratch(), n));
    if (!w) {
      finish("channel_write_failed");
      return;
    }
    if (finished_) {
      return;  // the write ran events that ended us
    }
    if (*w < n) {
      up_pending_.assign(scratch() + *w, scratch() + n);
      channel_->want_writable();
      return;
    }
    moved += n;
  }
  // Budget spent with data still flowing: continue after others had their turn.
  boost::asio::post(stream_->executor(), [self = shared_from_this()] { self->pull_up(); });
}

bool Bridge::check_records(std::span<const std::byte> bytes, bool later) {
  const auto verdict = guard_.feed(bytes);
  if (verdict == TlsRecordGuard::Verdict::watching) {
    return true;
  }
  watching_ = false;
  if (verdict == TlsRecordGuard::Verdict::done) {
    log_->debug("bridge.handshake_done conn=t{} records={}", id(), guard_.records());
    return true;
  }
  note_refusal(verdict);
  if (later) {
    finish_later(TlsRecordGuard::reason_for(verdict));
  } else {
    finish(TlsRecordGuard::reason_for(verdict));
  }
  return false;
}

void Bridge::note_refusal(TlsRecordGuard::Verdict verdict) {
  (verdict == TlsRecordGuard::Verdict::oversize ? stats_->tls_record_overflows
                                                : stats_->tls_bad_record_types)++;
  // A plaintext alert only while nothing of the upstream's went down: after its ServerHello
  // the client reads records under the handshake keys (TLS 1.3), and a plaintext alert would
  // surface as a confusing bad_record_mac; then a plain close says as much.
  close_alert_ = bytes_down_ == 0 ? TlsRecordGuard::alert_for(verdict) : 0;
  log_->warn(
      "bridge.tls_record_refused conn=t{} sni={} client={} type={} length={} alert={} "
      "reason=\"a record no TLS handshake sends (type 20-23, at most {} bytes) before the "
      "client's handshake was over: is the client speaking TLS?\"",
      id(), start_.server_name, start_.client_ip, guard_.last_type(), guard_.last_length(),
      close_alert_, TlsRecordGuard::kMaxRecordBytes);
}

void Bridge::send_up_eof() {
  if (!up_pending_.empty()) {
    return;  // after the last byte: on_channel_writable() comes back here
  }
  if (!peer_closed_channel_ && !channel_->send_eof()) {
    finish("channel_eof_failed");
    return;
  }
  set_up(UpState::eof_sent);
  maybe_finish();
}

void Bridge::arm_read() {
  read_armed_ = true;
  stream_->wait_readable([self = shared_from_this()](bool ready) {
    self->read_armed_ = false;
    if (ready) {
      self->pull_up();
    }
  });
}

// ---- down: channel -> public socket ----------------------------------------------------

std::size_t Bridge::on_channel_data(std::span<const std::byte> data) {
  // Runs inside channel calls: consume and record only (see ChannelHandler).
  if (finished_ || down_ != DownState::open) {
    return data.size();  // nobody to deliver to: discard, keep the channel moving
  }
  last_down_ = std::chrono::steady_clock::now();
  std::size_t sent = 0;
  if (down_pending_.empty()) {
    // Fast path: straight from the channel's buffer to the socket, no copy of ours.
    const auto r = stream_->write_some(data);
    if (r.status == PublicStream::Io::error || r.status == PublicStream::Io::eof) {
      set_down(DownState::closed);  // the public client is gone
      salvage_up_ = true;
      finish_later("client_reset");
      return data.size();
    }
    sent = r.status == PublicStream::Io::ok ? r.bytes : 0;
    last_drained_ = last_down_;  // it was keeping up: a stall, if any, starts now
  }
  const std::size_t room = config_.down_buffer_cap > down_pending_.size()
                               ? config_.down_buffer_cap - down_pending_.size()
                               : 0;
  const std::size_t keep = std::min(room, data.size() - sent);
  down_pending_.insert(down_pending_.end(), data.begin() + static_cast<std::ptrdiff_t>(sent),
                       data.begin() + static_cast<std::ptrdiff_t>(sent + keep));
  count_down(sent + keep);
  update_held();
  if (sent + keep < data.size()) {
    down_refused_ = true;
  }
  if (!down_pending_.empty() && !write_armed_) {
    arm_write();
  }
  return sent + keep;
}

void Bridge::arm_write() {
  write_armed_ = true;
  stream_->wait_writable([self = shared_from_this()](bool ready) {
    self->write_armed_ = false;
    if (ready) {
      self->flush_down();
    }
  });
}

void Bridge::flush_down() {
  if (finished_) {
    return;
  }
  if (down_ == DownState::closed) {
    finish("client_reset");
    return;
  }
  for (;;) {
    while (!down_pending_.empty()) {
      const auto r = stream_->write_some(down_pending_);
      if (r.status == PublicStream::Io::would_block) {
        if (!write_armed_) {
          arm_write();
        }
        return;
      }
      if (r.status != PublicStream::Io::ok) {
        salvage_up_ = true;
        finish("client_reset");
        return;
      }
      const std::size_t n = r.bytes;
      last_down_ = last_drained_ = std::chrono::steady_clock::now();
      down_pending_.erase(down_pending_.begin(),
                          down_pending_.begin() + static_cast<std::ptrdiff_t>(n));
      update_held();
    }
    if (!down_refused_ || channel_state_ != ChannelState::open) {
      break;
    }
    // Our buffer drained while the channel holds bytes we refused: no new data (and so no
    // event) comes while its window is withheld, so ask for them now. They may arrive right
    // here, through on_channel_data: loop to write whatever it buffered.
    down_refused_ = false;
    channel_->resume_reading();
    if (finished_) {
      return;
    }
  }
  std::vector<std::byte>().swap(down_pending_);
  if (down_ == DownState::eof_pending || (peer_closed_channel_ && down_ == DownState::open)) {
    stream_->shutdown_send();
    set_down(DownState::shutdown_sent);
  }
  maybe_finish();
}

void Bridge::on_channel_eof() {
  if (finished_) {
    return;
  }
  if (down_ == DownState::open) {
    set_down(DownState::eof_pending);
  }
  flush_down();
}

void Bridge::on_channel_closed() {
  if (finished_) {
    return;
  }
  peer_closed_channel_ = true;
  flush_down();  // shuts our side down once drained, and finishes when both are done
}

// ---- teardown --------------------------------------------------------------------------

void Bridge::maybe_finish() {
  if (finished_) {
    return;
  }
  const bool up_done = up_ == UpState::eof_sent || up_ == UpState::closed;
  const bool down_done = down_ == DownState::shutdown_sent || down_ == DownState::closed;
  if (up_done && down_done) {
    finish("closed");
  } else if (peer_closed_channel_ && down_done) {
    finish("upstream_closed");  // the far end closed the channel: nothing more can go up
  }
}

void Bridge::check_deadlines(std::chrono::steady_clock::time_point now) {
  if (finished_) {
    return;
  }
  if (channel_state_ == ChannelState::opening) {
    if (now - open_sent_ > config_.open_timeout) {
      stats_->channel_open_failures++;
      log_->warn(
          "bridge.open_timeout conn=t{} sni={} client={} reason=\"the far end did not answer "
          "the channel open within {} s\"",
          id(), start_.server_name, start_.client_ip,
          std::chrono::duration_cast<std::chrono::seconds>(config_.open_timeout).count());
      set_channel(ChannelState::failed);  // the visitor gets internal_error
      finish("upstream_timeout");
    }
    return;
  }
  if (channel_state_ != ChannelState::open) {
    return;
  }
  if (watching_ && now - handshake_started_ > config_.tls_handshake_timeout) {
    stats_->tls_handshake_timeouts++;
    log_->warn(
        "bridge.handshake_timeout conn=t{} sni={} client={} records={} reason=\"the client did "
        "not finish its TLS handshake within {} s (--tls-handshake-timeout)\"",
        id(), start_.server_name, start_.client_ip, guard_.records(),
        std::chrono::duration_cast<std::chrono::seconds>(config_.tls_handshake_timeout).count());
    watching_ = false;
    finish("tls_handshake_timeout");
    return;
  }
  if (now - last_up_ > config_.idle_timeout) {
    finish("idle_client");
  } else if (now - last_down_ > config_.idle_timeout) {
    finish("idle_upstream");
  }
}

void Bridge::abort(const char* reason) { finish(reason); }

void Bridge::finish_later(const char* reason) {
  if (finish_posted_) {
    return;
  }
  finish_posted_ = true;
  boost::asio::post(stream_->executor(),
                    [self = shared_from_this(), reason] { self->finish(reason); });
}

// A peer that wrote and then closed fails our next write (a local pair's with EPIPE, before
// we ever read what it wrote): an internal endpoint's owner refusing with an alert does just
// that. Its last words are still readable; the teammate gets them before the close.
void Bridge::salvage_up() {
  // Not gated on channel_->blocked(): one read's bytes within the window, once.
  if (up_ != UpState::open || !up_pending_.empty() || channel_state_ != ChannelState::open) {
    return;
  }
  const auto r = stream_->read_some(std::span<std::byte>(scratch(), kScratchBytes));
  if (r.status != PublicStream::Io::ok) {
    return;
  }
  count_up(r.bytes);
  (void)channel_->write(std::span<const std::byte>(scratch(), r.bytes));  // best effort
}

void Bridge::finish(const char* reason) {
  if (finished_) {
    return;
  }
  if (salvage_up_) {
    salvage_up();
  }
  finished_ = true;
  std::uint64_t alert_bytes = 0;
  if (channel_state_ == ChannelState::failed) {
    alert_bytes = stream_->alert_and_close(gw::kAlertInternalError);
  } else if (close_alert_ != 0) {
    alert_bytes = stream_->alert_and_close(close_alert_);
  } else {
    stream_->close();
  }
  count_down(alert_bytes);
  if (up_ != UpState::closed) {
    set_up(UpState::closed);
  }
  if (down_ != DownState::closed) {
    set_down(DownState::closed);
  }
  // The channel decides how to let go (an open in flight is waited for, then closed).
  channel_->close();
  set_channel(ChannelState::released);
  std::vector<std::byte>().swap(up_pending_);
  std::vector<std::byte>().swap(down_pending_);
  update_held();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start_.accepted_at)
                      .count();
  log_->info("tunnel.close conn=t{} s={} sni={} client={} in={} out={} ms={} reason={}", id(),
             label_.session_id, start_.server_name, start_.client_ip, bytes_up_, bytes_down_, ms,
             reason);
  if (counted_active_) {
    stats_->connections_active--;
    counted_active_ = false;
  }
  if (on_closed_) {
    auto on_closed = std::move(on_closed_);
    on_closed(connection_closed(start_, &label_, bytes_up_, bytes_down_, reason));
  }
}

void Bridge::count_up(std::uint64_t n) {
  bytes_up_ += n;
  stats_->bytes_in.fetch_add(n, std::memory_order_relaxed);
}

void Bridge::count_down(std::uint64_t n) {
  bytes_down_ += n;
  stats_->bytes_out.fetch_add(n, std::memory_order_relaxed);
}

}  // namespace gw::tunnel

#include "sshd/forwarded_channel.hpp"

#include <libssh/callbacks.h>

#include <algorithm>
#include <array>

namespace gw::sshd {
namespace {

/// Receive window we keep open on each forwarded channel. libssh 0.10 tops a window up to
/// only 1.28 MB after it falls below 640 KB (~640 KB per round trip: 12.8 MB/s at 50 ms RTT);
/// OpenSSH uses 2 MiB. Memory per stalled connection is bounded by this plus the bridge's cap.
constexpr std::uint32_t kChannelWindow = 2 * 1024 * 1024;
/// Re-open the window after this much arrived: small steps keep it near full, like OpenSSH
/// (which adjusts every few packets); each step costs one poll and one small packet.
constexpr std::uint64_t kWindowRefill = 128 * 1024;
/// One read of bytes libssh kept while the handler had no room.
constexpr std::size_t kScratchBytes = 64 * 1024;
/// Largest single ssh_channel_write: libssh splits it into packets anyway.
constexpr std::size_t kMaxWrite = 1 << 20;
/// Most a well-behaved client can have sent that we have not consumed: the window we keep open
/// (libssh's own top-up, 1.28 MB, is smaller) plus one maximum packet. More is data past the
/// window: libssh 0.10 buffers it anyway, so a client ignoring the window could pin memory
/// without bound. We close such a channel.
constexpr std::size_t kMaxUnconsumed = kChannelWindow + 64 * 1024;

std::byte* scratch() {
  thread_local std::array<std::byte, kScratchBytes> buffer;
  return buffer.data();
}

}  // namespace

ForwardedChannel::ForwardedChannel(ChannelHost& host, ssh_session session, std::string address,
                                   std::uint32_t port, std::string origin,
                                   std::uint16_t origin_port, tunnel::BufferBudgets budgets)
    : host_(host),
      session_(session),
      address_(std::move(address)),
      port_(port),
      origin_(std::move(origin)),
      origin_port_(origin_port),
      held_bytes_(std::move(budgets)) {}

ForwardedChannel::ForwardedChannel(ChannelHost& host, ssh_session session, ssh_channel accepted,
                                   tunnel::BufferBudgets budgets)
    : host_(host),
      session_(session),
      channel_(accepted),
      port_(0),
      origin_port_(0),
      held_bytes_(std::move(budgets)) {}

ForwardedChannel::~ForwardedChannel() {
  // Normally settle() freed it; a channel still here belongs to a session being freed, whose
  // ssh_free() frees it (detach() forgot it), or was never started.
  if (channel_ != nullptr) {
    ssh_remove_channel_callbacks(channel_, &callbacks_);
  }
}

void ForwardedChannel::start(tunnel::ChannelHandler& handler) {
  handler_ = &handler;
  const bool accepted = channel_ != nullptr;  // opened by the client: nothing to send
  if (!accepted) {
    channel_ = ssh_channel_new(session_);
  }
  if (channel_ == nullptr) {
    state_ = State::failed;
    queue();  // reported from service(), never from inside start()
    return;
  }
  callbacks_.userdata = this;
  callbacks_.channel_data_function = &ForwardedChannel::on_data_cb;
  callbacks_.channel_eof_function = &ForwardedChannel::on_eof_cb;
  callbacks_.channel_close_function = &ForwardedChannel::on_close_cb;
  ssh_callbacks_init(&callbacks_);
  ssh_set_channel_callbacks(channel_, &callbacks_);
  if (accepted) {
    state_ = State::open;
    window_after_write_ = ssh_channel_window_size(channel_);
    queue();  // on_channel_opened() from service(), never from inside start()
    return;
  }
  state_ = State::opening;
  host_.count_open_in_flight(+1);
  const int rc = poll_open();  // sends the open; a local client may even answer at once
  if (rc != SSH_AGAIN) {
    set_answered(rc);
  }
  host_.after_channel_write();
  queue();  // the answer (or the one we have) is reported after the pump
}

void ForwardedChannel::set_answered(int rc) {
  state_ = rc == SSH_OK ? State::open : State::failed;
  host_.count_open_in_flight(-1);
  if (state_ == State::open) {
    window_after_write_ = ssh_channel_window_size(channel_);
  }
}

bool ForwardedChannel::collect_open() {
  // An answer only arrives with input; ssh_channel_is_open() (no syscall) also catches one that
  // libssh read during another call.
  if (!host_.input_processed() && !ssh_channel_is_open(channel_)) {
    return false;
  }
  const int rc = poll_open();
  if (rc == SSH_AGAIN) {
    return false;
  }
  set_answered(rc);
  return true;
}

bool ForwardedChannel::window_overflowed() {
  // Only our writes shrink the remote window: a smaller one than our last write left means the
  // client's window adjusts overflowed it (libssh 0.10 adds them unchecked; RFC 4254 caps the
  // window at 2^32-1).
  if (ssh_channel_window_size(channel_) < window_after_write_) {
    violation("window_overflow");
    return true;
  }
  return false;
}

void ForwardedChannel::violation(const char* what) {
  if (violated_ == nullptr) {
    violated_ = what;
    host_.channel_violation(what);
    queue();
  }
}

int ForwardedChannel::poll_open() {
  // OpenSSH matches the channel to its forward by exactly the address and port it asked for;
  // the originator is the public client, so the user's side can log it.
  return ssh_channel_open_reverse_forward(channel_, address_.c_str(), static_cast<int>(port_),
                                          origin_.c_str(), origin_port_);
}

void ForwardedChannel::queue() {
  if (!queued_ && handler_ != nullptr) {
    queued_ = true;
    host_.queue_service(weak_from_this());
  }
}

void ForwardedChannel::service() {
  queued_ = false;
  if (handler_ == nullptr) {
    return;  // released or detached: settle() takes it from here
  }
  if (state_ == State::opening) {
    if (!collect_open()) {
      queue();  // still waiting: ask after the next pump
      return;
    }
    host_.after_channel_write();
  }
  if (violated_ != nullptr) {
    handler_->on_channel_failed(violated_);  // the handler closes us
    return;
  }
  if (state_ == State::failed) {
    handler_->on_channel_open_failed();  // the handler closes us
    return;
  }
  if (state_ != State::open) {
    return;
  }
  if (!opened_reported_) {
    opened_reported_ = true;
    handler_->on_channel_opened();
    if (handler_ == nullptr) {
      return;
    }
  }
  if (eof_seen_ && !eof_reported_) {
    eof_reported_ = true;
    handler_->on_channel_eof();
    if (handler_ == nullptr) {
      return;
    }
  }
  if (close_seen_ && !close_reported_) {
    close_reported_ = true;
    handler_->on_channel_closed();
    if (handler_ == nullptr) {
      return;
    }
  }
  if (want_writable_) {
    if (window_overflowed()) {
      handler_->on_channel_failed(violated_);
      return;
    }
    if (blocked()) {
      queue();  // no "window reopened" callback in 0.10: look again after the next pump
    } else {
      want_writable_ = false;
      handler_->on_channel_writable();
      if (handler_ == nullptr) {
        return;
      }
    }
  }
  if (received_since_grow_ >= kWindowRefill && !eof_seen_ && !close_seen_) {
    grow_window();
  }
}

std::optional<std::size_t> ForwardedChannel::write(std::span<const std::byte> data) {
  if (channel_ == nullptr || state_ != State::open) {
    return std::nullopt;
  }
  if (window_overflowed()) {
    return std::nullopt;
  }
  std::size_t done = 0;
  while (done < data.size() && ssh_channel_window_size(channel_) > 0) {
    const auto chunk = static_cast<std::uint32_t>(std::min(data.size() - done, kMaxWrite));
    const int n = ssh_channel_write(channel_, data.data() + done, chunk);
    if (n < 0) {
      return std::nullopt;
    }
    if (n == 0) {
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  window_after_write_ = ssh_channel_window_size(channel_);
  host_.note_data_sent(done);
  host_.after_channel_write();
  return done;
}

bool ForwardedChannel::blocked() const {
  return channel_ == nullptr || state_ != State::open || host_.output_congested() ||
         ssh_channel_window_size(channel_) == 0;
}

void ForwardedChannel::want_writable() {
  want_writable_ = true;
  queue();
}

bool ForwardedChannel::send_eof() {
  if (channel_ == nullptr || state_ != State::open) {
    return false;
  }
  if (close_seen_) {
    return true;  // the client closed it: nothing to half-close
  }
  const bool ok = ssh_channel_send_eof(channel_) != SSH_ERROR;
  host_.after_channel_write();
  return ok;
}

std::size_t ForwardedChannel::deliver(std::span<const std::byte> data) {
  const std::size_t taken = handler_->on_channel_data(data);
  received_since_grow_ += taken;
  if (received_since_grow_ >= kWindowRefill) {
    queue();  // re-open the window after this pump
  }
  return taken;
}

void ForwardedChannel::resume_reading() {
  if (handler_ == nullptr || channel_ == nullptr) {
    return;
  }
  if (!held_.empty()) {
    const std::size_t taken = deliver(held_);
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(taken));
    update_held();
    if (!held_.empty()) {
      return;  // still no room: the handler calls again
    }
    std::vector<std::byte>().swap(held_);
  }
  // libssh keeps what the handler refused and withholds the window; no new packet (and so no
  // callback) comes until we read. The read may run the data callback re-entrantly, which
  // offers the bytes ahead of the ones the read returns: order is kept either way.
  //
  // Everything libssh holds is taken in one read: after each read that leaves the window below
  // 640 KB, libssh 0.10 tops it up to 1.28 MB whatever it still buffers, so reading 64 KB at a
  // time let a consumer slower than the client grow libssh's buffer by up to 1.28 MB per read
  // (past kMaxUnconsumed: the channel was closed as a window violation; seen with ssh -L
  // uploads into a slower internal endpoint). One read per resume bounds it by the window.
  while (libssh_holds_data_ && handler_ != nullptr && channel_ != nullptr) {
    const int avail = ssh_channel_poll(channel_, 0);  // may run the data callback re-entrantly
    const std::size_t count =
        std::max(avail > 0 ? static_cast<std::size_t>(avail) : 0, kScratchBytes);
    std::vector<std::byte> big;  // only while a slow consumer let libssh hold more than 64 KB
    std::byte* dest = scratch();
    if (count > kScratchBytes) {
      big.resize(count);
      dest = big.data();
    }
    const int n =
        ssh_channel_read_nonblocking(channel_, dest, static_cast<std::uint32_t>(count), 0);
    host_.after_channel_write();  // the read may have sent a window adjust
    if (n <= 0 || handler_ == nullptr) {
      libssh_holds_data_ = false;
      libssh_held_ = 0;
      update_held();
      break;
    }
    libssh_held_ -= std::min(libssh_held_, static_cast<std::size_t>(n));
    const auto got = std::span<const std::byte>(dest, static_cast<std::size_t>(n));
    const std::size_t taken = deliver(got);
    if (taken < got.size()) {
      held_.assign(got.begin() + static_cast<std::ptrdiff_t>(taken), got.end());
      update_held();
      return;  // full again; libssh may still hold more (libssh_holds_data_ stays)
    }
    update_held();
  }
  if (eof_seen_ || close_seen_) {
    queue();  // the EOF/close report waits for nothing now
  }
}

void ForwardedChannel::grow_window() {
  // libssh has no call to set a window. ssh_channel_read_timeout() grows it to `count` minus
  // what is buffered, then copies at most the buffered bytes. We only call it with libssh's
  // buffer empty, so nothing is normally left to copy; the destination must still be `count`
  // long. Its pages stay untouched (not resident) unless libssh writes them. Bytes it does
  // copy (data that arrived during the call) are held and delivered first.
  if (libssh_holds_data_ || !held_.empty() || handler_ == nullptr) {
    return;  // the handler is full: growing now would only let more pile up
  }
  if (held_bytes_.over()) {
    // The endpoint's or key's connections hold their budget: no window beyond libssh's own
    // top-up (1.28 MB) for now, so one more stalled reader pins less (session.cpp closes the
    // stalled ones).
    return;
  }
  thread_local std::unique_ptr<std::byte[]> sink(new std::byte[kChannelWindow]);
  received_since_grow_ = 0;
  const int n = ssh_channel_read_timeout(channel_, sink.get(), kChannelWindow, 0, 0);
  host_.after_channel_write();
  if (n > 0 && handler_ != nullptr) {
    const auto got = std::span<const std::byte>(sink.get(), static_cast<std::size_t>(n));
    const std::size_t taken = deliver(got);
    if (taken < got.size()) {
      held_.assign(got.begin() + static_cast<std::ptrdiff_t>(taken), got.end());
      update_held();
    }
  }
}

void ForwardedChannel::close() {
  if (handler_ == nullptr) {
    return;  // already released (or detached with its session)
  }
  handler_ = nullptr;  // callbacks from now on discard (keeping the window moving)
  std::vector<std::byte>().swap(held_);
  libssh_held_ = 0;  // discarded from now on, and freed with the channel soon after
  update_held();
  host_.adopt(shared_from_this());
}

bool ForwardedChannel::settle() {
  if (channel_ == nullptr) {
    return true;
  }
  if (state_ == State::opening && !collect_open()) {
    // Freeing an open in flight would leak the client's upstream connection: ask again, with
    // the same arguments, until the answer.
    return false;
  }
  // ssh_channel_free closes an OPEN channel (the client then drops its upstream connection) and
  // only frees a denied one (closing that would drop the whole session: LIBSSH-NOTES #1).
  ssh_remove_channel_callbacks(channel_, &callbacks_);
  ssh_channel_free(channel_);
  channel_ = nullptr;
  host_.after_channel_write();
  return true;
}

void ForwardedChannel::detach() {
  if (state_ == State::opening) {
    host_.count_open_in_flight(-1);
    state_ = State::failed;
  }
  channel_ = nullptr;
  handler_ = nullptr;
}

// ---- libssh callbacks: record and hand over bytes, nothing more ------------------------

int ForwardedChannel::on_data_cb(ssh_session, ssh_channel, void* data, std::uint32_t len,
                                 int is_stderr, void* self) {
  auto* c = static_cast<ForwardedChannel*>(self);
  c->host_.note_data_packet();
  if (is_stderr || c->handler_ == nullptr || c->violated_ != nullptr) {
    return static_cast<int>(len);  // no stderr on forwarded channels; released: discard
  }
  if (len > kMaxUnconsumed) {
    c->violation("window_violation");  // the client sent past our window: see kMaxUnconsumed
    return static_cast<int>(len);      // dropped, so libssh frees it; the bridge ends
  }
  if (!c->held_.empty()) {
    c->libssh_holds_data_ = true;  // older bytes first: libssh keeps these meanwhile
    c->libssh_held_ = len;         // libssh offers everything it holds for the channel
    c->update_held();
    return 0;
  }
  const std::size_t taken =
      c->deliver(std::span<const std::byte>(static_cast<const std::byte*>(data), len));
  if (taken < len) {
    c->libssh_holds_data_ = true;
  }
  c->libssh_held_ = len - taken;
  c->update_held();
  return static_cast<int>(taken);
}

void ForwardedChannel::on_eof_cb(ssh_session, ssh_channel, void* self) {
  auto* c = static_cast<ForwardedChannel*>(self);
  c->eof_seen_ = true;
  c->queue();
}

void ForwardedChannel::on_close_cb(ssh_session, ssh_channel, void* self) {
  auto* c = static_cast<ForwardedChannel*>(self);
  c->close_seen_ = true;
  c->queue();
}

}  // namespace gw::sshd

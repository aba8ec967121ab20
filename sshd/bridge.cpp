#include "sshd/bridge.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>

#include "sshd/session.hpp"
#include "tunnel/tls_alert.hpp"

namespace gw::sshd {
namespace {

/// Bytes a stalled public reader may leave with us before we stop consuming from libssh
/// (which then keeps the rest and withholds the window): bounds memory per connection.
constexpr std::size_t kDownBufferCap = 256 * 1024;
/// One read from the public socket; also the most we move per read before checking limits.
constexpr std::size_t kScratchBytes = 64 * 1024;
/// Receive window we keep open on each forwarded channel. libssh 0.10 tops a window up to
/// only 1.28 MB after it falls below 640 KB (~640 KB per round trip: 12.8 MB/s at 50 ms RTT);
/// OpenSSH uses 2 MiB. Memory per stalled connection is bounded by this plus kDownBufferCap.
constexpr std::uint32_t kChannelWindow = 2 * 1024 * 1024;
/// Re-open the window after this much arrived: small steps keep it near full, like OpenSSH
/// (which adjusts every few packets); each step costs one poll and one small packet.
constexpr std::uint64_t kWindowRefill = 128 * 1024;
/// Per wake-up budget for one connection, so one busy client can't starve the others on
/// this thread.
constexpr std::size_t kUpBudgetBytes = 512 * 1024;
/// How long the ssh client may take to answer a channel open (it connects to its upstream
/// first). OpenSSH answers within its own connect timeout; a client that never answers (stopped,
/// wedged) must not hold public connections forever.
constexpr auto kChannelOpenTimeout = std::chrono::seconds(10);

/// Reads go through one buffer per thread, so idle connections hold no transfer buffer.
std::byte* scratch() {
  thread_local std::array<std::byte, kScratchBytes> buffer;
  return buffer.data();
}

const char* to_string(Bridge::UpState s) {
  switch (s) {
    case Bridge::UpState::open: return "open";
    case Bridge::UpState::eof_pending: return "eof_pending";
    case Bridge::UpState::eof_sent: return "eof_sent";
    case Bridge::UpState::closed: return "closed";
  }
  return "?";
}
const char* to_string(Bridge::DownState s) {
  switch (s) {
    case Bridge::DownState::open: return "open";
    case Bridge::DownState::eof_pending: return "eof_pending";
    case Bridge::DownState::shutdown_sent: return "shutdown_sent";
    case Bridge::DownState::closed: return "closed";
  }
  return "?";
}
const char* to_string(Bridge::ChannelState s) {
  switch (s) {
    case Bridge::ChannelState::opening: return "opening";
    case Bridge::ChannelState::open: return "open";
    case Bridge::ChannelState::failed: return "failed";
    case Bridge::ChannelState::freed: return "freed";
  }
  return "?";
}

}  // namespace

Bridge::Bridge(Session& session, tunnel::IncomingConnection conn)
    : session_(session), conn_(std::move(conn)) {
  started_ = last_up_ = last_down_ = std::chrono::steady_clock::now();
  boost::system::error_code ec;
  conn_.socket.non_blocking(true, ec);
  conn_.socket.set_option(boost::asio::ip::tcp::no_delay(true), ec);
}

Bridge::~Bridge() = default;

void Bridge::set_up(UpState next) {
  session_.ctx_->tunnel_log->debug("bridge.up conn=t{} {} -> {}", conn_.id, to_string(up_),
                                   to_string(next));
  up_ = next;
}
void Bridge::set_down(DownState next) {
  session_.ctx_->tunnel_log->debug("bridge.down conn=t{} {} -> {}", conn_.id, to_string(down_),
                                   to_string(next));
  down_ = next;
}
void Bridge::set_channel(ChannelState next) {
  session_.ctx_->tunnel_log->debug("bridge.channel conn=t{} {} -> {}", conn_.id,
                                   to_string(channel_state_), to_string(next));
  channel_state_ = next;
}

void Bridge::start(std::size_t forward_key, const Forward& forward) {
  forward_key_ = forward_key;
  channel_ = ssh_channel_new(session_.session_.get());
  if (channel_ == nullptr) {
    set_channel(ChannelState::failed);
    finish("channel_alloc_failed");
    return;
  }
  callbacks_.userdata = this;
  callbacks_.channel_data_function = &Bridge::on_data_cb;
  callbacks_.channel_eof_function = &Bridge::on_eof_cb;
  callbacks_.channel_close_function = &Bridge::on_close_cb;
  ssh_callbacks_init(&callbacks_);
  ssh_set_channel_callbacks(channel_, &callbacks_);
  endpoint_id_ = forward.id;
  endpoint_url_ = session_.url_for(forward);
  open_sent_ = std::chrono::steady_clock::now();
  session_.ctx_->stats->connections_active++;
  counted_active_ = true;
  open_address_ = forward.bind_address;
  open_port_ = forward.bind_port;
  up_pending_ = std::move(conn_.peeked);
  count_up(up_pending_.size());  // the ClientHello the router read counts as client bytes
  // OpenSSH matches the channel to its forward by exactly the address and port it asked
  // for; the originator is the public client, so the user's side can log it.
  const std::string origin = conn_.client.address().to_string();
  const int rc = ssh_channel_open_reverse_forward(channel_, open_address_.c_str(),
                                                  static_cast<int>(open_port_), origin.c_str(),
                                                  conn_.client.port());
  if (rc == SSH_OK) {
    on_opened();
  } else if (rc == SSH_ERROR) {
    on_open_refused();  // a local client can refuse before this call even returns
  }
  // SSH_AGAIN: the answer arrives in a later pump; service() asks again.
}

void Bridge::service() {
  if (finished_) {
    return;
  }
  if (channel_state_ == ChannelState::opening) {
    const int rc = ssh_channel_open_reverse_forward(
        channel_, open_address_.c_str(), static_cast<int>(open_port_),
        conn_.client.address().to_string().c_str(), conn_.client.port());
    if (rc == SSH_AGAIN) {
      session_.queue_service(shared_from_this());  // still waiting: ask after the next pump
      return;
    }
    if (rc != SSH_OK) {
      on_open_refused();
      return;
    }
    on_opened();
    return;
  }
  if (channel_state_ != ChannelState::open) {
    return;
  }
  if (received_since_grow_ >= kWindowRefill && !peer_closed_channel_ &&
      down_ == DownState::open) {
    grow_window();
  }
  pull_up();
  if (!finished_) {
    flush_down();
  }
}

void Bridge::on_open_refused() {
  set_channel(ChannelState::failed);
  session_.ctx_->stats->channel_open_failures++;
  session_.ctx_->tunnel_log->warn(
      "bridge.open_refused conn=t{} sni={} client={} reason=\"the ssh client refused the "
      "channel: is the upstream of its -R running?\"",
      conn_.id, conn_.server_name, conn_.client.address().to_string());
  finish("upstream_refused");
}

void Bridge::on_opened() {
  set_channel(ChannelState::open);
  session_.ctx_->stats->channel_open_latency.observe(std::chrono::steady_clock::now() -
                                                     open_sent_);
  // No window growth here: libssh tops the window up to 1.28 MB on the first data, and
  // service() widens it once kWindowRefill bytes arrived. Short connections (most) then cost
  // no extra poll and no extra packet.
  pull_up();
}

void Bridge::grow_window() {
  // libssh has no call to set a window. ssh_channel_read_timeout() grows it to `count` minus
  // what is buffered, then copies at most the buffered bytes. We only call it with libssh's
  // buffer empty, and on_data takes everything while growing_window_ is set, so nothing is
  // normally left to copy; the destination must still be `count` long. Its pages stay
  // untouched (not resident) unless libssh writes them.
  if (libssh_holds_down_data_) {
    return;  // flush_down() drains libssh first; it comes back here via service()
  }
  thread_local std::unique_ptr<std::byte[]> sink(new std::byte[kChannelWindow]);
  received_since_grow_ = 0;
  growing_window_ = true;
  const int n = ssh_channel_read_timeout(channel_, sink.get(), kChannelWindow, 0, 0);
  if (n > 0) {
    on_data(sink.get(), static_cast<std::size_t>(n));  // takes all of it: never lose bytes
  }
  growing_window_ = false;
  session_.after_channel_write();
}

// ---- up: public socket -> channel ------------------------------------------------------

bool Bridge::push_up_pending() {
  std::size_t done = 0;
  while (done < up_pending_.size()) {
    if (ssh_channel_window_size(channel_) == 0) {
      break;
    }
    const auto chunk = static_cast<std::uint32_t>(
        std::min<std::size_t>(up_pending_.size() - done, 1u << 20));
    const int n = ssh_channel_write(channel_, up_pending_.data() + done, chunk);
    if (n < 0) {
      finish("channel_write_failed");
      return false;
    }
    if (n == 0) {
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  up_pending_.erase(up_pending_.begin(), up_pending_.begin() + static_cast<std::ptrdiff_t>(done));
  if (up_pending_.empty()) {
    // Give the memory back: an idle connection should hold no buffer.
    std::vector<std::byte>().swap(up_pending_);
  }
  session_.after_channel_write();
  return up_pending_.empty();
}

void Bridge::pull_up() {
  if (finished_ || channel_state_ != ChannelState::open) {
    return;
  }
  if (!up_pending_.empty() && !push_up_pending()) {
    if (!finished_) {
      session_.queue_service(shared_from_this());  // window or output full: retry after pump
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
  while (moved < kUpBudgetBytes) {
    if (session_.output_congested() || ssh_channel_window_size(channel_) == 0) {
      session_.queue_service(shared_from_this());
      return;
    }
    boost::system::error_code ec;
    const std::size_t n =
        conn_.socket.read_some(boost::asio::buffer(scratch(), kScratchBytes), ec);
    if (ec == boost::asio::error::would_block) {
      arm_read();
      return;
    }
    if (ec == boost::asio::error::eof) {
      set_up(UpState::eof_pending);
      send_up_eof();
      return;
    }
    if (ec) {
      finish("client_reset");
      return;
    }
    last_up_ = std::chrono::steady_clock::now();
    count_up(n);
    const int w = ssh_channel_write(channel_, scratch(), static_cast<std::uint32_t>(n));
    if (w < 0) {
      finish("channel_write_failed");
      return;
    }
    session_.after_channel_write();
    if (static_cast<std::size_t>(w) < n) {
      up_pending_.assign(scratch() + w, scratch() + n);
      session_.queue_service(shared_from_this());
      return;
    }
    moved += n;
  }
  // Budget spent with data still flowing: continue after others had their turn.
  boost::asio::post(session_.io_context(), [self = shared_from_this()] { self->pull_up(); });
}

void Bridge::send_up_eof() {
  if (!up_pending_.empty()) {
    return;  // after the last byte: service() comes back
  }
  if (!peer_closed_channel_ && ssh_channel_send_eof(channel_) == SSH_ERROR) {
    finish("channel_eof_failed");
    return;
  }
  session_.after_channel_write();
  set_up(UpState::eof_sent);
  maybe_finish();
}

void Bridge::arm_read() {
  read_armed_ = true;
  conn_.socket.async_wait(boost::asio::ip::tcp::socket::wait_read,
                          [self = shared_from_this()](const boost::system::error_code& ec) {
                            self->read_armed_ = false;
                            if (ec || self->finished_) {
                              return;
                            }
                            self->pull_up();
                          });
}

// ---- down: channel -> public socket ----------------------------------------------------

int Bridge::on_data_cb(ssh_session, ssh_channel, void* data, std::uint32_t len, int is_stderr,
                       void* self) {
  if (is_stderr) {
    return static_cast<int>(len);  // forwarded channels carry no stderr; drop it
  }
  return static_cast<Bridge*>(self)->on_data(static_cast<const std::byte*>(data), len);
}

int Bridge::on_data(const std::byte* data, std::size_t len) {
  if (finished_ || down_ != DownState::open) {
    return static_cast<int>(len);  // nobody to deliver to: discard, keep the window moving
  }
  last_down_ = std::chrono::steady_clock::now();
  received_since_grow_ += len;
  if (received_since_grow_ >= kWindowRefill) {
    session_.queue_service(shared_from_this());  // re-open the window after this pump
  }
  std::size_t sent = 0;
  if (down_pending_.empty()) {
    // Fast path: straight from libssh's buffer to the socket, no copy of ours.
    const ssize_t n = ::send(conn_.socket.native_handle(), data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      // The public client is gone; finish from service(), never inside a callback.
      set_down(DownState::closed);
      session_.queue_service(shared_from_this());
      return static_cast<int>(len);
    }
    sent = n > 0 ? static_cast<std::size_t>(n) : 0;
  }
  // While growing the window, take everything (bounded by the window): see grow_window().
  const std::size_t room = growing_window_                         ? len
                           : kDownBufferCap > down_pending_.size() ? kDownBufferCap - down_pending_.size()
                                                                   : 0;
  const std::size_t keep = std::min(room, len - sent);
  down_pending_.insert(down_pending_.end(), data + sent, data + sent + keep);
  count_down(sent + keep);
  if (sent + keep < len) {
    libssh_holds_down_data_ = true;
  }
  if (!down_pending_.empty() && !write_armed_) {
    arm_write();
  }
  return static_cast<int>(sent + keep);
}

void Bridge::arm_write() {
  write_armed_ = true;
  conn_.socket.async_wait(boost::asio::ip::tcp::socket::wait_write,
                          [self = shared_from_this()](const boost::system::error_code& ec) {
                            self->write_armed_ = false;
                            if (ec || self->finished_) {
                              return;
                            }
                            self->flush_down();
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
      boost::system::error_code ec;
      const std::size_t n = conn_.socket.write_some(boost::asio::buffer(down_pending_), ec);
      if (ec == boost::asio::error::would_block) {
        if (!write_armed_) {
          arm_write();
        }
        return;
      }
      if (ec) {
        finish("client_reset");
        return;
      }
      last_down_ = std::chrono::steady_clock::now();
      down_pending_.erase(down_pending_.begin(),
                          down_pending_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    if (!libssh_holds_down_data_ || channel_state_ != ChannelState::open) {
      break;
    }
    // Our buffer drained while libssh still holds bytes it offered us: take them now,
    // since no new packet (and so no callback) comes while the window is withheld. The
    // read may run on_data re-entrantly, which queues bytes older than the ones it returns:
    // append, and loop to write whatever either put in the buffer.
    const int n = ssh_channel_read_nonblocking(channel_, scratch(), kScratchBytes, 0);
    session_.after_channel_write();  // the read may have sent a window adjust
    if (n > 0) {
      count_down(static_cast<std::size_t>(n));
      down_pending_.insert(down_pending_.end(), scratch(), scratch() + n);
    } else {
      libssh_holds_down_data_ = false;
    }
  }
  std::vector<std::byte>().swap(down_pending_);
  if (down_ == DownState::eof_pending || (peer_closed_channel_ && down_ == DownState::open)) {
    boost::system::error_code ec;
    conn_.socket.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ec);
    set_down(DownState::shutdown_sent);
  }
  maybe_finish();
}

void Bridge::on_eof_cb(ssh_session, ssh_channel, void* self) {
  auto* b = static_cast<Bridge*>(self);
  if (b->down_ == DownState::open) {
    b->set_down(DownState::eof_pending);
  }
  b->session_.queue_service(b->shared_from_this());
}

void Bridge::on_close_cb(ssh_session, ssh_channel, void* self) {
  auto* b = static_cast<Bridge*>(self);
  b->peer_closed_channel_ = true;
  b->session_.queue_service(b->shared_from_this());
}

// ---- teardown --------------------------------------------------------------------------

void Bridge::maybe_finish() {
  const bool up_done = up_ == UpState::eof_sent || up_ == UpState::closed;
  const bool down_done = down_ == DownState::shutdown_sent || down_ == DownState::closed;
  if (up_done && down_done) {
    finish("closed");
  } else if (peer_closed_channel_ && down_done) {
    // The client closed the channel: nothing more can go up.
    finish("upstream_closed");
  }
}

void Bridge::check_deadlines(std::chrono::steady_clock::time_point now, std::chrono::seconds idle) {
  if (finished_) {
    return;
  }
  if (channel_state_ == ChannelState::opening) {
    if (now - open_sent_ > kChannelOpenTimeout) {
      // The channel stays with libssh, as when a client leaves during the open (see finish()).
      session_.ctx_->stats->channel_open_failures++;
      session_.ctx_->tunnel_log->warn(
          "bridge.open_timeout conn=t{} sni={} client={} reason=\"the ssh client did not answer "
          "the channel open within {} s\"",
          conn_.id, conn_.server_name, conn_.client.address().to_string(),
          kChannelOpenTimeout.count());
      tunnel::send_alert_and_close(conn_.socket, gw::kAlertInternalError);
      finish("upstream_timeout");
    }
    return;
  }
  if (channel_state_ != ChannelState::open) {
    return;
  }
  if (now - last_up_ > idle) {
    abort("idle_client");
  } else if (now - last_down_ > idle) {
    abort("idle_upstream");
  }
}

void Bridge::abort(const char* reason) { finish(reason); }

void Bridge::finish(const char* reason) {
  if (finished_) {
    return;
  }
  finished_ = true;
  boost::system::error_code ec;
  if (channel_state_ == ChannelState::failed) {
    tunnel::send_alert_and_close(conn_.socket, gw::kAlertInternalError);
  } else {
    conn_.socket.close(ec);
  }
  if (channel_ != nullptr) {
    // libssh keeps the channel until the client's close arrives and may still deliver data
    // for it: unhook our callbacks first, this Bridge may be gone by then.
    ssh_remove_channel_callbacks(channel_, &callbacks_);
  }
  if (channel_ != nullptr && channel_state_ == ChannelState::opening) {
    // Freeing an open in flight would leak the client's upstream connection: the session
    // waits for the answer, then closes or frees the channel.
    session_.adopt_open(Session::PendingOpen{channel_, open_address_,
                                             static_cast<int>(open_port_),
                                             conn_.client.address().to_string(),
                                             conn_.client.port()});
    channel_ = nullptr;
  }
  if (channel_ != nullptr) {
    // ssh_channel_free closes an OPEN channel and frees a denied one; never call it while
    // the open is in flight (libssh 0.10 then leaks the client's upstream connection).
    ssh_channel_free(channel_);
    channel_ = nullptr;
    set_channel(ChannelState::freed);
    session_.after_channel_write();
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - started_)
                      .count();
  session_.ctx_->tunnel_log->info("tunnel.close conn=t{} s={} sni={} client={} in={} out={} ms={} reason={}",
                                  conn_.id, session_.id(), conn_.server_name,
                                  conn_.client.address().to_string(), bytes_up_, bytes_down_, ms,
                                  reason);
  if (counted_active_) {
    session_.ctx_->stats->connections_active--;
  }
  session_.bridge_closed(*this, reason);
  session_.bridge_finished(id());
}

void Bridge::count_up(std::uint64_t n) {
  bytes_up_ += n;
  session_.ctx_->stats->bytes_in.fetch_add(n, std::memory_order_relaxed);
}

void Bridge::count_down(std::uint64_t n) {
  bytes_down_ += n;
  session_.ctx_->stats->bytes_out.fetch_add(n, std::memory_order_relaxed);
}

}  // namespace gw::sshd

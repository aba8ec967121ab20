#include "sshd/session.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>

#include "common/printable.hpp"
#include "keys/source_match.hpp"
#include "sshd/auth.hpp"
#include "tunnel/tls_alert.hpp"

namespace gw::sshd {
namespace {

/// dopoll rounds per wake-up (libssh reads 4 KiB a round) before yielding to other work.
constexpr int kMaxPollRounds = 64;
/// SSH messages other than channel data one session may have processed in one turn of its
/// thread before yielding. Rounds bound bytes, not work: 64 rounds of 4 KiB are 8 bulk data
/// packets but ~6,000 tiny ones (window adjusts, want-reply requests), which took a turn of
/// 10-20 ms and put another user's round trip at 36-59 ms (measured, 4 such sessions). 64 is
/// about one round of small messages (a 4 KiB read holds ~60-100; a round is never split), a
/// fraction of a millisecond.
constexpr std::uint64_t kControlMessagesPerTurn = 64;
/// Messages other than channel data a session may send in one second, beyond those our own
/// traffic earns; past it, its input is not read until the second is over (counted). What it
/// bounds is the CPU one session can make us spend on messages that carry no data: each costs
/// a decryption, a dispatch and often a reply (one write each): 4 sessions sending ~6,000 a
/// second each took 70-80 % of a core (measured). A client's answers to our own traffic are
/// earned on top (kEarnedPerDataBytes, kEarnedPerOpen), so a busy legitimate session is never
/// paused: the base is for keepalives, requests and the odd message.
constexpr std::uint64_t kControlMessagesPerSecond = 500;
/// One message earned per this many bytes of channel data we send the client: its window
/// adjusts (OpenSSH sends one every 3 packets, ~96 KiB; a client adjusting per 32 KiB packet
/// is covered 4 times over).
constexpr std::uint64_t kEarnedPerDataBytes = 8 * 1024;
/// Messages earned per channel we open: the answer, EOF, close, a window adjust or two.
constexpr std::uint64_t kEarnedPerOpen = 8;
/// Channel and global requests (pty-req, env, window-change, keepalive, ...; not the command,
/// not forwards) one session may send a second: a client sends a handful at login, one per
/// terminal resize and one per ServerAliveInterval. More are refused, counted.
constexpr std::uint32_t kRequestsPerSecond = 100;
/// tcpip-forward and cancel requests one session may send a second: room for every forward at
/// login, while a client churning forwards (work, log lines and notices for nothing) is cut off.
constexpr std::uint32_t kForwardRequestsPerSecond = 100;
/// Failed auth attempts before the connection is dropped (OpenSSH MaxAuthTries is 6).
constexpr int kMaxAuthFailures = 6;
/// How long a closing session waits for its last messages to reach the user.
constexpr auto kCloseLinger = std::chrono::seconds(5);
/// Time from accept to the end of the key exchange (the login grace covers the rest): a
/// stock client needs milliseconds; one that sends nothing only holds an unauthenticated slot.
constexpr auto kKeyExchangeDeadline = std::chrono::seconds(10);
/// How often a forward waiting for its name (held by the key's other session) looks again.
constexpr auto kWaitingClaimInterval = std::chrono::milliseconds(100);
/// forwarded-tcpip opens one session may have unanswered (those whose visitor left or timed
/// out included): a burst of new visitors fits, while a client that answers none can't make us
/// hold (and poll) thousands. One more visitor gets alert 80 at once.
constexpr int kMaxOpensInFlight = 256;
/// A client that has answered no open for this long, with some waiting, is stopped or wedged:
/// the session is closed (its visitors have had alert 80 after the 10 s open deadline anyway).
constexpr auto kUnansweredOpensLimit = std::chrono::seconds(60);

/// What the connections of one endpoint (one session's forward) may hold buffered toward
/// public clients that read slower than their upstream sends, and those of one key over all its
/// sessions. Each connection holds at most ~2.27 MiB (the 2 MiB window plus the bridge's 256 KiB),
/// so 20 stalled visitors on one endpoint pinned 45 MiB, and the 10,000 allowed 22 GiB.
/// 16 MiB is 7 connections at full window: several slow downloads at once go untouched. 64 MiB
/// per key is 4 such endpoints and the most one flood may cost (issue 16's figure).
constexpr std::size_t kEndpointBufferBudget = 16 * 1024 * 1024;
constexpr std::size_t kKeyBufferBudget = 64 * 1024 * 1024;
/// Over budget, a connection whose public client has taken none of what we hold for it for
/// this long is closed, the longest stalled first, until the budget holds again; while over,
/// the session looks every kOverBudgetTick. libssh 0.10 grants every channel 1.28 MB of window
/// on its first packet (no API withholds it), so closing is the only hard bound, and what
/// stalls within this time is over the budget until then (~1.5 MiB a connection). A reading
/// client, however slow, takes bytes whenever its TCP window opens: it is chosen last.
constexpr auto kStalledBeforeClose = std::chrono::milliseconds(500);
constexpr auto kOverBudgetTick = std::chrono::milliseconds(100);

using Clock = std::chrono::steady_clock;

const char* to_string(Session::State s) {
  switch (s) {
    case Session::State::key_exchange:
      return "key_exchange";
    case Session::State::authenticating:
      return "authenticating";
    case Session::State::authenticated:
      return "authenticated";
    case Session::State::ready:
      return "ready";
    case Session::State::closing:
      return "closing";
    case Session::State::closed:
      return "closed";
  }
  return "?";
}

/// Routes to one forward of one session; the registry holds it weakly.
class ForwardEndpoint final : public tunnel::TunnelEndpoint {
 public:
  ForwardEndpoint(std::weak_ptr<Session> session, std::size_t key, std::uint64_t session_id)
      : session_(std::move(session)), key_(key), session_id_(session_id) {}
  void deliver(tunnel::IncomingConnection conn) override {
    if (auto s = session_.lock()) {
      s->deliver(key_, std::move(conn));
    } else {
      conn.alert_and_close(gw::kAlertUnrecognizedName);
    }
  }
  std::uint64_t session_id() const override { return session_id_; }
  void displaced(const std::string&) override {
    if (auto s = session_.lock()) {
      s->forward_displaced(key_);
    }
  }

 private:
  std::weak_ptr<Session> session_;
  std::size_t key_;
  std::uint64_t session_id_;
};

void set_socket_options(int fd) {
  const int one = 1;
  // Without TCP_NODELAY the first byte of each new connection waits ~40 ms (Nagle against
  // delayed ACK): the stall OpenSSH's sshd has for `ssh -N` clients.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // Dead clients are found by TCP, not by SSH: libssh 0.10's non-blocking keepalive sends
  // only every other call and can't report a missing answer. An idle connection is probed
  // after 15 s (3 probes 5 s apart: gone within ~30 s); unacknowledged data gives up after
  // 45 s. The kernel's error then ends the session like any disconnect.
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  const int idle = 15, interval = 5, count = 3, user_timeout_ms = 45000;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

// Trampolines: libssh calls C function pointers with our `this` as userdata.
int auth_pubkey_cb(ssh_session, const char* user, ssh_key key, char state, void* self) {
  return static_cast<Session*>(self)->on_auth_pubkey(user, key, state);
}
ssh_channel channel_open_cb(ssh_session, void* self) {
  return static_cast<Session*>(self)->on_session_channel_open();
}
void global_request_cb(ssh_session, ssh_message msg, void* self) {
  static_cast<Session*>(self)->on_global_request(msg);
}
int auth_none_cb(ssh_session, const char*, void* self) {
  return static_cast<Session*>(self)->on_auth_other("none");
}
int message_cb(ssh_session, ssh_message msg, void* self) {
  // Requests no callback took: libssh answers them with the default refusal once we return 1.
  // Authentication requests among them (password, keyboard-interactive, ...) count too, and
  // channel requests (env, signal, ...) and other channel opens take from the request budget.
  if (ssh_message_type(msg) == SSH_REQUEST_CHANNEL_OPEN &&
      ssh_message_subtype(msg) == SSH_CHANNEL_DIRECT_TCPIP) {
    static_cast<Session*>(self)->on_direct_tcpip(msg);  // counts it against the request budget
    return 0;                                           // answered
  }
  switch (ssh_message_type(msg)) {
    case SSH_REQUEST_AUTH:
      static_cast<Session*>(self)->on_auth_other("other");
      break;
    case SSH_REQUEST_CHANNEL:
    case SSH_REQUEST_CHANNEL_OPEN:
      static_cast<Session*>(self)->request_allowed();  // refused either way: only counted
      break;
    default:
      break;
  }
  return 1;
}

}  // namespace

Session::Session(boost::asio::io_context& ioc, std::shared_ptr<const ServerContext> ctx,
                 std::uint64_t id)
    : ioc_(ioc),
      ctx_(std::move(ctx)),
      id_(id),
      fd_watch_(ioc),
      tick_(ioc),
      resume_(ioc),
      terminal_(*this),
      forwards_(ctx_, id),
      forward_requests_(kForwardRequestsPerSecond),
      requests_(kRequestsPerSecond),
      direct_(ioc, *this, ctx_, id) {
  started_at_ = last_peer_data_ = last_keepalive_sent_ = Clock::now();
  bridge_config_.idle_timeout = ctx_->idle_timeout;
  bridge_config_.tls_handshake_timeout = ctx_->tls_handshake_timeout;
}

Session::~Session() {
  // ssh_free (session_'s deleter, run after this body) frees every channel: make sure nothing
  // that outlives us (a bridge still held by a pending handler) touches one afterwards.
  for (auto& [id, entry] : bridges_) {
    entry.bridge->abort("session_closed");
  }
  direct_.abort_all("session_closed");
  for (auto& channel : adopted_) {
    channel->detach();
  }
  terminal_.detach();
  if (event_ && session_) {
    ssh_event_remove_session(event_.get(), session_.get());
  }
}

void Session::set_state(State next) {
  info_dirty_ = true;
  ctx_->log->debug("session.state conn=s{} {} -> {}", id_, to_string(state_), to_string(next));
  if (next == State::authenticated) {
    startup_.release(StartupTable::Outcome::authenticated);
  } else if (next != State::key_exchange && next != State::authenticating) {
    startup_.release(StartupTable::Outcome::closed);  // timeouts released it before, as such
  }
  state_ = next;
}

void Session::start(ssh_bind bind, std::mutex& bind_mutex, int fd,
                    const boost::asio::ip::tcp::endpoint& peer, StartupTable::Slot slot) {
  startup_ = std::move(slot);
  peer_address_ = peer.address();
  peer_ip_ = peer.address().to_string();
  peer_port_ = peer.port();
  peer_ = peer_ip_ + ":" + std::to_string(peer_port_);
  session_.reset(ssh_new());
  int rc = SSH_ERROR;
  if (session_) {
    std::lock_guard lock(bind_mutex);  // ssh_bind is shared by every thread's acceptor
    rc = ssh_bind_accept_fd(bind, session_.get(), fd);
  }
  if (rc != SSH_OK) {
    ctx_->log->error("session.accept_failed conn=s{} peer={} error={}", id_, peer_,
                     session_ ? ssh_get_error(session_.get()) : "out of memory");
    ::close(fd);
    set_state(State::closed);
    return;
  }
  set_socket_options(fd);

  server_cb_.userdata = this;
  server_cb_.auth_pubkey_function = auth_pubkey_cb;
  server_cb_.auth_none_function = auth_none_cb;
  server_cb_.channel_open_request_session_function = channel_open_cb;
  ssh_callbacks_init(&server_cb_);
  ssh_set_server_callbacks(session_.get(), &server_cb_);
  ssh_set_message_callback(session_.get(), message_cb, this);
  session_cb_.userdata = this;
  session_cb_.global_request_function = global_request_cb;
  ssh_callbacks_init(&session_cb_);
  ssh_set_callbacks(session_.get(), &session_cb_);
  ssh_set_auth_methods(session_.get(), SSH_AUTH_METHOD_PUBLICKEY);
  ssh_set_blocking(session_.get(), 0);
  // Counts every packet libssh reads (in_packets): the per-turn and per-second message budgets.
  ssh_set_counters(session_.get(), nullptr, &packets_);

  // Called once: in non-blocking mode it may report SSH_AGAIN forever; the event loop and
  // callbacks drive the rest of the exchange.
  if (ssh_handle_key_exchange(session_.get()) == SSH_ERROR) {
    ctx_->log->info("session.kex_failed conn=s{} peer={} error=\"{}\"", id_, peer_,
                    printable(ssh_get_error(session_.get())));
    set_state(State::closed);
    return;
  }
  // Out of descriptors (a flood, a low ulimit), dup fails: end this session, not the process
  // (assign would throw on -1).
  const int watch_fd = ::dup(fd);
  boost::system::error_code ec;
  if (watch_fd >= 0) {
    fd_watch_.assign(watch_fd, ec);
  }
  if (watch_fd < 0 || ec) {
    ctx_->log->warn("session.open_failed conn=s{} peer={} error=\"{}\"", id_, peer_,
                    watch_fd < 0 ? std::strerror(errno) : ec.message());
    if (watch_fd >= 0) {
      ::close(watch_fd);
    }
    set_state(State::closed);
    return;
  }
  event_.reset(ssh_event_new());
  ssh_event_add_session(event_.get(), session_.get());
  ctx_->sessions->add(id_, weak_from_this());
  startup_.bind(weak_from_this());
  ctx_->log->info("session.open conn=s{} peer={}", id_, peer_);
  on_tick();
  pump();
}

// ---- event loop ------------------------------------------------------------------------

void Session::pump() {
  pump_posted_ = false;
  if (state_ == State::closed) {
    return;
  }
  // A peer that doesn't read what we send must not make us read (and answer) more: while our
  // output is backed up, one round per wake-up, and the next wake-up only when the socket takes
  // output again (arm_waits). Otherwise up to kMaxPollRounds, then others get a turn; a turn
  // also ends after kControlMessagesPerTurn messages that carried no data. A session paused
  // for its per-second message budget is not polled at all (a poll reads as well as writes):
  // its output waits with its input, for the resume timer.
  const auto now = Clock::now();
  const bool paused = now < paused_until_;
  const int max_rounds = paused ? 0 : output_congested() ? 1 : kMaxPollRounds;
  const std::uint64_t packets_before = packets_.in_packets;
  const std::uint64_t data_before = data_packets_;
  const auto control_this_turn = [&]() -> std::uint64_t {
    const std::uint64_t packets = packets_.in_packets - packets_before;
    const std::uint64_t data = data_packets_ - data_before;
    return packets > data ? packets - data : 0;
  };
  int rounds = 0;
  bool turn_spent = false;
  for (; rounds < max_rounds; ++rounds) {
    const int rc = ssh_event_dopoll(event_.get(), 0);
    if (rc != SSH_OK) {
      break;  // SSH_AGAIN: nothing ready; SSH_ERROR: checked through the status below
    }
    input_processed_ = true;
    if (output_congested()) {
      ++rounds;
      break;
    }
    if (control_this_turn() >= kControlMessagesPerTurn) {
      turn_spent = true;
      break;
    }
  }
  charge_control_messages(control_this_turn(), now);
  if (state_ == State::key_exchange && ssh_get_status(session_.get()) == 0 &&
      ssh_get_kex_algo(session_.get()) != nullptr) {
    set_state(State::authenticating);
  }
  if (!ssh_is_connected(session_.get()) ||
      (ssh_get_status(session_.get()) & (SSH_CLOSED | SSH_CLOSED_ERROR)) != 0) {
    if (close_reason_.empty()) {
      close_reason_ = "client_disconnect";
    }
    finish_close();
    return;
  }
  after_pump();
  input_processed_ = false;
  if (state_ == State::closed) {
    return;
  }
  if ((rounds == kMaxPollRounds || turn_spent) && Clock::now() >= paused_until_) {
    request_pump();  // more is waiting: continue after other connections had a turn
  }
  arm_waits();
}

void Session::charge_control_messages(std::uint64_t n, Clock::time_point now) {
  if (now - control_window_start_ >= std::chrono::seconds(1)) {
    control_window_start_ = now;
    control_messages_ = 0;
    control_earned_ = 0;
    data_sent_earning_ = 0;
  }
  control_messages_ += n;
  if (control_messages_ <=
          kControlMessagesPerSecond + control_earned_ + data_sent_earning_ / kEarnedPerDataBytes ||
      now < paused_until_) {
    return;
  }
  // Over the budget: nothing more is read from this client until the second is over. Its
  // TCP window closes, so its sends block; its channels wait too (they are its own).
  paused_until_ = control_window_start_ + std::chrono::seconds(1);
  ctx_->stats->sessions_paused++;
  warn_thinned(*ctx_->log, *ctx_->refusal_lines,
               "session.paused conn=s{} peer={} reason=\"over {} SSH messages without data in a "
               "second: input paused until the second is over\"{}",
               id_, peer_, kControlMessagesPerSecond);
  arm_resume();
}

void Session::arm_resume() {
  resume_.expires_at(paused_until_);
  resume_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) {
      self->pump();
    }
  });
}

bool Session::request_allowed() {
  if (std::uint64_t ignored = 0; requests_.allow(ignored)) {
    return true;
  }
  ctx_->stats->requests_refused++;
  warn_thinned(*ctx_->log, *ctx_->refusal_lines,
               "session.request_refused conn=s{} peer={} reason=\"over {} channel and global "
               "requests a second\"{}",
               id_, peer_, kRequestsPerSecond);
  return false;
}

void Session::after_pump() {
  if (auth_failures_ >= kMaxAuthFailures && !key_) {
    finish_close();
    return;
  }
  if (terminal_.take_quit() && state_ != State::closing && state_ != State::closed) {
    close_reason_ = "user_quit";  // not when we closed first: the client is only answering
    begin_close();
  }
  if (auto command = terminal_.take_command()) {
    run_command(*command);
  }
  // Channels that callbacks (or their bridges) flagged, serviced outside the callbacks. One
  // still waiting re-queues itself for the next pump.
  std::vector<std::weak_ptr<ForwardedChannel>> queue;
  queue.swap(service_queue_);
  servicing_ = true;
  for (auto& weak : queue) {
    if (auto channel = weak.lock()) {
      channel->service();
    }
  }
  servicing_ = false;
  std::erase_if(adopted_, [](const auto& channel) { return channel->settle(); });
  if (state_ == State::ready) {
    enforce_buffer_budgets();
  }
  for (const auto id : finished_bridges_) {
    bridges_.erase(id);
  }
  finished_bridges_.clear();
  direct_.collect();
  for (const auto& refusal : direct_.take_refusals()) {
    terminal_.write("snigate: " + refusal, true);  // one per open the user's own ssh made
  }
  if (const std::string why = direct_.take_disconnect(); !why.empty()) {
    // A refused ssh -W: OpenSSH prints a disconnect's reason, not an open failure's.
    ssh_session_set_disconnect_message(session_.get(), why.c_str());
    close_reason_ = "direct_refused";
    finish_close();
    return;
  }
  if (draining_ && bridges_.empty() && direct_.size() == 0) {
    begin_close();
  }
  if (info_dirty_) {
    publish_info();
  }
}

void Session::arm_waits() {
  // No read wait while our output is backed up (see pump()): the write wait brings us back.
  // Nor while paused (charge_control_messages): the resume timer does.
  if (!read_armed_ && !output_congested() && Clock::now() >= paused_until_) {
    read_armed_ = true;
    fd_watch_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                         [self = shared_from_this()](const boost::system::error_code& ec) {
                           self->read_armed_ = false;
                           if (ec) {
                             return;
                           }
                           self->last_peer_data_ = Clock::now();
                           self->pump();
                         });
  }
  if (!write_armed_ && Clock::now() >= paused_until_ &&
      (ssh_get_poll_flags(session_.get()) & SSH_WRITE_PENDING) != 0) {
    write_armed_ = true;
    fd_watch_.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                         [self = shared_from_this()](const boost::system::error_code& ec) {
                           self->write_armed_ = false;
                           if (!ec) {
                             self->pump();
                           }
                         });
  }
}

void Session::request_pump() {
  if (!pump_posted_ && state_ != State::closed) {
    pump_posted_ = true;
    boost::asio::post(ioc_, [self = shared_from_this()] { self->pump(); });
  }
}

void Session::after_channel_write() {
  if (session_ && (ssh_get_poll_flags(session_.get()) & SSH_WRITE_PENDING) != 0) {
    request_pump();
  }
}

bool Session::output_congested() const {
  return (ssh_get_poll_flags(session_.get()) & SSH_WRITE_PENDING) != 0;
}

void Session::queue_service(std::weak_ptr<ForwardedChannel> channel) {
  service_queue_.push_back(std::move(channel));
  // From outside the pump (a bridge's socket handler), run one soon. A channel re-queueing
  // itself from service() (still waiting for window or an answer) waits for the next natural
  // pump instead: a pump per pump would spin.
  if (!servicing_) {
    request_pump();
  }
}

void Session::adopt(std::shared_ptr<ForwardedChannel> channel) {
  adopted_.push_back(std::move(channel));
  request_pump();
}

void Session::count_open_in_flight(int delta) {
  if (delta > 0) {
    control_earned_ += kEarnedPerOpen;
  }
  if (delta < 0 || opens_in_flight_ == 0) {
    unanswered_since_ = Clock::now();  // an answer (or the first open): the clock restarts
  }
  opens_in_flight_ += delta;
}

bool Session::enforce_buffer_budgets() {
  const bool key_over = key_budget_ && key_budget_->over();
  const auto over = [&](const BridgeEntry& e) {
    if (key_over) {
      return true;
    }
    const Forward* f = forwards_.find(e.forward_key);
    return f != nullptr && f->buffered && f->buffered->over();
  };
  bool any = key_over;
  for (const auto& [key, f] : forwards_) {
    any = any || (f.buffered && f.buffered->over());
  }
  if (!any) {
    return false;  // the usual case: two atomic loads per forward
  }
  // Over: the stalled connections of what is over, longest stalled first, until it holds. The
  // key's budget may be over because of another session's connections: each session closes
  // only its own, so the one whose connections stall is the one that acts.
  const auto now = Clock::now();
  std::vector<std::pair<Clock::time_point, std::shared_ptr<tunnel::Bridge>>> stalled;
  for (const auto& [id, entry] : bridges_) {
    const auto since = entry.bridge->stalled_since();
    if (!entry.bridge->finished() && since && now - *since >= kStalledBeforeClose && over(entry)) {
      stalled.emplace_back(*since, entry.bridge);
    }
  }
  std::sort(stalled.begin(), stalled.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [since, bridge] : stalled) {
    const auto it = bridges_.find(bridge->id());
    if (it == bridges_.end() || !over(it->second)) {
      continue;  // what it counted against holds again
    }
    const Forward* f = forwards_.find(it->second.forward_key);
    ctx_->stats->buffer_budget_closes++;
    warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                 "tunnel.buffer_budget conn=t{} s={} fp={} reason=\"the public client read "
                 "nothing for {} ms while {} held over its budget of buffered bytes; closed\"{}",
                 bridge->id(), id_, key_ ? key_->fingerprint : "-",
                 std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count(),
                 key_over ? "the key's connections" : "the endpoint's connections");
    if (f != nullptr) {
      terminal_.connection_line(
          "snigate: a connection to " + f->hostname +
          " was closed: its client stopped reading while the endpoint's "
          "connections held over " +
          std::to_string(kEndpointBufferBudget >> 20) +
          " MiB buffered (the key's limit: " + std::to_string(kKeyBufferBudget >> 20) + " MiB)");
    }
    bridge->abort("buffer_budget");  // gives its bytes back to the budgets at once
  }
  return true;
}

void Session::channel_violation(const char* what) {
  ctx_->stats->channel_violations++;
  warn_thinned(*ctx_->log, *ctx_->refusal_lines,
               "session.channel_violation conn=s{} fp={} what={} reason=\"the ssh client broke "
               "the channel's flow control; the channel is closed\"{}",
               id_, key_ ? key_->fingerprint : "-", what);
}

void Session::on_tick() {
  if (state_ == State::closed) {
    return;
  }
  const auto now = Clock::now();
  auto next_tick = std::chrono::milliseconds(1000);
  switch (state_) {
    case State::key_exchange:
    case State::authenticating:
      // The key exchange has a deadline of its own, shorter than the login grace: a client
      // that hasn't even finished it is holding a slot, not logging in.
      if (now - started_at_ > ctx_->login_grace ||
          (state_ == State::key_exchange && now - started_at_ > kKeyExchangeDeadline)) {
        close_reason_ = state_ == State::key_exchange ? "kex_timeout" : "login_timeout";
        startup_.release(StartupTable::Outcome::timed_out);  // counts against its address
        finish_close();
        return;
      }
      break;
    case State::authenticated:
      // `ssh -N` never opens a session channel: start routing after a short grace. With a
      // session channel, wait (bounded) for its command, whose options apply first.
      if ((!terminal_.exists() && now - authenticated_at_ >= ctx_->no_command_grace) ||
          now - authenticated_at_ > ctx_->command_wait) {
        become_ready();
      }
      next_tick = std::chrono::milliseconds(50);
      break;
    case State::ready:
      terminal_.summary();
      if (key_ &&
          keys::is_expired(key_->options, std::chrono::duration_cast<std::chrono::seconds>(
                                              std::chrono::system_clock::now().time_since_epoch())
                                              .count())) {
        terminal_.write("snigate: your key expired (expiry-time in authorized_keys); closing",
                        true);
        close_reason_ = "key_expired";
        exit_status_ = 1;
        begin_close();
        break;
      }
      for (auto& [id, entry] : bridges_) {
        entry.bridge->check_deadlines(now);
      }
      direct_.check_deadlines(now);
      if (enforce_buffer_budgets()) {
        next_tick = kOverBudgetTick;  // stalls mature without any pump: look again soon
      }
      if (opens_in_flight_ > 0 && now - unanswered_since_ > kUnansweredOpensLimit) {
        terminal_.write("snigate: your ssh client has answered no connection for " +
                            std::to_string(kUnansweredOpensLimit.count()) +
                            " s (is it stopped or overloaded?); closing",
                        true);
        ctx_->log->warn(
            "session.refuse conn=s{} fp={} reason=\"{} channel opens unanswered for "
            "{} s\"",
            id_, key_ ? key_->fingerprint : "-", opens_in_flight_, kUnansweredOpensLimit.count());
        close_reason_ = "opens_unanswered";
        exit_status_ = 1;
        begin_close();
        break;
      }
      if (forwards_.any_waiting()) {
        claim_forwards();
        end_if_nothing_served();
        next_tick = kWaitingClaimInterval;
      }
      // SSH-level keepalives keep NAT and firewall state fresh on idle sessions. libssh
      // sends on every other call, so call at half the interval. Liveness itself is TCP's
      // job (set_socket_options): a quiet but healthy client is never cut off here.
      if (now - last_peer_data_ > ctx_->keepalive_interval / 2 &&
          now - last_keepalive_sent_ > ctx_->keepalive_interval / 2) {
        last_keepalive_sent_ = now;
        ssh_send_keepalive(session_.get());
        after_channel_write();
      }
      break;
    case State::closing:
      if (now - closing_since_ > kCloseLinger) {
        finish_close();
        return;
      }
      break;
    case State::closed:
      return;
  }
  if (state_ == State::closed) {
    return;
  }
  after_pump();  // idle aborts and the like
  if (state_ == State::closed) {
    return;
  }
  arm_waits();
  if (state_ == State::authenticated) {
    next_tick = std::chrono::milliseconds(50);  // authenticated during this tick
  }
  tick_.expires_after(next_tick);
  tick_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) {
      self->on_tick();
    }
  });
}

// ---- auth ------------------------------------------------------------------------------

int Session::on_auth_pubkey(const char* user, ssh_key key, char signature_state) {
  if (state_ == State::key_exchange) {
    set_state(State::authenticating);
  }
  user_ = user ? user : "";
  const auto deny = [this] { return count_auth_failure(); };
  char* b64 = nullptr;
  if (ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK) {
    return deny();
  }
  const std::string blob = b64;
  ssh_string_free_char(b64);
  const char* type = ssh_key_type_to_char(ssh_key_type(key));
  const auto store = ctx_->keys->get();
  const AuthDecision d = decide_auth(
      store.get(),
      AuthAttempt{type ? type : "", blob,
                  signature_state == SSH_PUBLICKEY_STATE_NONE    ? AuthAttempt::Signature::none
                  : signature_state == SSH_PUBLICKEY_STATE_VALID ? AuthAttempt::Signature::valid
                                                                 : AuthAttempt::Signature::wrong,
                  peer_address_, std::chrono::system_clock::now()});
  if (d.verdict == AuthDecision::Verdict::deny) {
    if (d.key == nullptr) {
      warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                   "auth.reject conn=s{} peer={} user=\"{}\" type={} reason=\"{}\"{}", id_, peer_,
                   printable(user_), type ? type : "?", d.reason);
    } else {
      warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                   "auth.reject conn=s{} peer={} loc={} fp={} reason=\"{}\"{}", id_, peer_,
                   d.key->loc, d.key->fingerprint, d.reason);
    }
    return deny();
  }
  if (d.verdict == AuthDecision::Verdict::probe_ok) {
    return SSH_AUTH_SUCCESS;  // the probe: "would this key do?"
  }
  key_ = *d.key;
  key_budget_ = ctx_->sessions->key_budget(key_->fingerprint, kKeyBufferBudget);
  authenticated_at_ = Clock::now();
  // Cluster mode: the key's sessions holding names on other nodes count too.
  const std::size_t elsewhere =
      ctx_->claim_gate ? ctx_->claim_gate->remote_usage(d.key->fingerprint).sessions : 0;
  if (ctx_->sessions->set_key(id_, d.key->fingerprint) + elsewhere > ctx_->max_sessions_per_key) {
    // Accepted, so the user can be told why (a refused auth only says "Permission denied");
    // the session ends as soon as it can show the message.
    over_limit_ = "this key already has " + std::to_string(ctx_->max_sessions_per_key) +
                  " sessions open (the limit): close one first";
  }
  set_state(State::authenticated);
  ctx_->log->info("auth.accept conn=s{} peer={} user=\"{}\" key=\"{}\" loc={} fp={}", id_, peer_,
                  printable(user_), printable(d.key->comment), d.key->loc, d.key->fingerprint);
  ctx_->events->emit(tunnel::SessionStarted{id_, peer_ip_, peer_port_, user_, d.key->fingerprint,
                                            d.key->comment, std::chrono::system_clock::now()});
  // The next tick decides when routing starts (`-N`: after the short grace): bring it forward
  // from the once-a-second pre-auth rhythm.
  tick_.expires_after(std::chrono::milliseconds(50));
  tick_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) {
      self->on_tick();
    }
  });
  return SSH_AUTH_SUCCESS;
}

int Session::count_auth_failure() {
  // Every refusal counts, probes included: a client cycling through wrong keys only ever
  // probes, and one retrying a known key (expired, wrong source, bad signature) must not get
  // unlimited signature checks either. Like OpenSSH's MaxAuthTries and "Failed publickey".
  ctx_->stats->auth_failures++;
  if (++auth_failures_ >= kMaxAuthFailures) {
    close_reason_ = "auth_failures";
    request_pump();  // closed in after_pump(), outside this callback
  }
  return SSH_AUTH_DENIED;
}

int Session::on_auth_other(const char* method) {
  if (state_ == State::key_exchange) {
    set_state(State::authenticating);
  }
  // Like OpenSSH, only a client's first "none" (the probe for which methods exist) is free: a
  // client repeating requests it knows fail (and not reading the answers) hits the limit.
  if (std::string_view(method) == "none" && !free_none_used_) {
    free_none_used_ = true;
    return SSH_AUTH_DENIED;
  }
  return count_auth_failure();
}

// ---- the session channel and the `tls` command -----------------------------------------

ssh_channel Session::on_session_channel_open() {
  if (!key_) {
    return nullptr;
  }
  return terminal_.open(session_.get());
}

void Session::run_command(const std::string& command_line) {
  const CommandResult parsed = parse_command(command_line);
  terminal_.flush_notices();
  if (!over_limit_.empty()) {
    refuse_session(over_limit_, "over_limit");
    return;
  }
  if (!parsed.command) {
    ctx_->log->info("session.command_refused conn=s{} command=\"{}\"", id_,
                    printable(command_line));
    terminal_.write(parsed.error, true);
    exit_status_ = 1;
    close_reason_ = "command_refused";
    begin_close();
    return;
  }
  command_ = *parsed.command;
  for (const auto& [list, out] : {std::pair{&command_->allow_cidr, &access_.allow},
                                  std::pair{&command_->deny_cidr, &access_.deny}}) {
    for (const auto& text : *list) {
      const auto cidr = gw::Cidr::parse(text);
      if (!cidr) {
        refuse_session("cannot use CIDR " + printable(text, 60) +
                           " (an IPv4-mapped IPv6 prefix must be /96 or longer)",
                       "command_refused");
        return;
      }
      out->push_back(*cidr);
    }
  }
  if (command_->help) {
    terminal_.write(tls_help_text(), false);
    for (auto& [key, f] : forwards_) {
      terminal_.write(forwards_.banner_for(f), false);
    }
    close_reason_ = "help";
    begin_close();
    return;
  }
  become_ready();  // claims the names: banners and refusals are printed there
}

void Session::refuse_session(const std::string& why, const char* reason) {
  ctx_->log->warn("session.refuse conn=s{} fp={} reason=\"{}\"", id_,
                  key_ ? key_->fingerprint : "-", why);
  terminal_.write("snigate: " + why, true);
  exit_status_ = 1;
  close_reason_ = reason;
  begin_close();
}

void Session::become_ready() {
  if (state_ != State::authenticated) {
    return;
  }
  if (!over_limit_.empty()) {
    refuse_session(over_limit_, "over_limit");  // `-N`: only the log says why
    return;
  }
  set_state(State::ready);
  // Names are claimed now, when the command's --pool/--takeover are known; until then the
  // endpoints route nowhere (DESIGN.md section 3: options apply before the first connection).
  claim_forwards();
  end_if_nothing_served();
}

void Session::end_if_nothing_served() {
  if (state_ == State::ready && forwards_.empty() && !asked_for_forwards_) {
    // No -R at all: a teammate's session for ssh -L / -W to internal endpoints, whose opens
    // come whenever their local clients connect. It stays; the user is told once.
    if (!told_no_forwards_) {
      told_no_forwards_ = true;
      terminal_.write(
          "snigate: no -R in this session: it serves no endpoint; ssh -L PORT:NAME:443 / -W "
          "NAME:443 through it reach internal endpoints (to publish: add -R "
          "NAME:443:localhost:PORT)",
          true);
    }
    return;
  }
  if (state_ == State::ready && forwards_.empty()) {
    // Never sit connected serving nothing: the client (ExitOnForwardFailure, autossh,
    // systemd) then knows to stop or retry.
    terminal_.write("snigate: none of your forwards could be served (see above); closing", true);
    ctx_->log->warn("session.refuse conn=s{} fp={} reason=\"no endpoint to serve\"", id_,
                    key_ ? key_->fingerprint : "-");
    exit_status_ = 1;
    close_reason_ = "no_endpoints";
    begin_close();
  }
}

ClaimOptions Session::claim_options() const {
  ClaimOptions o;
  o.key_fingerprint = key_->fingerprint;
  o.key_name = key_->comment;
  o.pool = command_ && command_->pool;
  o.takeover = command_ && command_->takeover;
  o.internal = command_ && command_->internal;
  o.pool_group = key_->options.permit_listen.empty() ? key_->fingerprint : "";
  return o;
}

void Session::claim_forwards() {
  const ClaimOptions options = claim_options();
  for (auto it = forwards_.begin(); it != forwards_.end();) {
    Forward& f = it->second;
    if (f.registration || (f.waiting && ctx_->claim_gate &&
                           ctx_->claim_gate->probe(f.hostname, options.key_fingerprint) ==
                               tunnel::NameState::held_same_key)) {
      ++it;  // claimed, or still held by the key's session on another node
      continue;
    }
    const std::string refusal = forwards_.claim(it->first, f, options);
    if (refusal.empty()) {
      info_dirty_ = true;
      if (!gate_claim(it->first, f)) {
        terminal_.write(forwards_.banner_for(f), false);
      }
      ++it;
      continue;
    }
    if (!options.takeover && !options.pool &&
        ctx_->registry->probe(f.hostname, options.key_fingerprint) ==
            tunnel::NameState::held_same_key) {
      // Most often a client reconnecting after a network drop, before the gateway noticed the
      // old connection died: hold the forward and take the name the moment it is free.
      if (!f.waiting) {
        f.waiting = true;
        ctx_->log->info(
            "forward.waiting conn=s{} name={} reason=\"held by another session of "
            "the same key\"",
            id_, f.hostname);
        terminal_.write("snigate: waiting for " + f.hostname +
                            ": another session of your key holds it; it moves here the moment that "
                            "session ends (or run `tls --takeover` to move it now)",
                        true);
      }
      ++it;
      continue;
    }
    ctx_->stats->forwards_refused++;
    ctx_->log->warn("forward.refuse conn=s{} name={} reason=\"{}\"", id_, f.hostname, refusal);
    terminal_.write("snigate: cannot forward " + f.hostname + ": " + refusal, true);
    it = forwards_.remove(it, "refused");
    info_dirty_ = true;
  }
}

void Session::forward_displaced(std::size_t key) {
  boost::asio::post(ioc_, [self = shared_from_this(), key] {
    self->end_forward(key, "was taken over by a newer session of your key (--takeover)", true);
  });
}

void Session::end_forward(std::size_t key, const std::string& why, bool taken_over) {
  Forward* f = forwards_.find(key);
  if (f == nullptr) {
    return;
  }
  terminal_.write("snigate: " + forwards_.url_for(*f) + " " + why, true);
  forwards_.remove(key, taken_over ? "taken_over" : "route_lost");
  info_dirty_ = true;
  if (forwards_.empty()) {
    // Exit status 0 after a takeover: the newer session serves the name now; a supervisor
    // restarting this one would only take it back and forth. A name lost otherwise (the
    // cluster registry gave it to someone else) is worth retrying: 1.
    close_reason_ = taken_over ? "taken_over" : "route_lost";
    exit_status_ = taken_over ? 0 : 1;
    begin_close();
  }
  request_pump();
}

bool Session::gate_claim(std::size_t key, Forward& f) {
  // Internal names are claimed like public ones (one owner cluster-wide); ingress nodes refuse
  // them on the public port and relay only teammates' ssh -L / -W to them.
  if (!ctx_->claim_gate) {
    return false;
  }
  const ClaimOptions o = claim_options();
  tunnel::GateCallbacks callbacks;
  // Both arrive on the gate's thread: post to ours.
  callbacks.decided = [weak = weak_from_this(), key](tunnel::GateAnswer answer) {
    if (auto s = weak.lock()) {
      boost::asio::post(s->ioc_,
                        [s, key, answer = std::move(answer)] { s->gate_decided(key, answer); });
    }
  };
  callbacks.lost = [weak = weak_from_this(), key](std::string why, bool taken_over) {
    if (auto s = weak.lock()) {
      boost::asio::post(s->ioc_, [s, key, why = std::move(why), taken_over] {
        s->end_forward(key, why, taken_over);
      });
    }
  };
  f.gate_pending = true;
  f.gate_ticket =
      ctx_->claim_gate->claim(tunnel::GateClaim{f.hostname, o.key_fingerprint, o.pool_group, o.pool,
                                                o.takeover, f.internal, id_},
                              std::move(callbacks));
  return true;
}

void Session::gate_decided(std::size_t key, const tunnel::GateAnswer& answer) {
  Forward* f = forwards_.find(key);
  if (f == nullptr || !f->gate_pending) {
    return;
  }
  f->gate_pending = false;
  info_dirty_ = true;
  if (answer.verdict == tunnel::GateVerdict::won) {
    terminal_.write(forwards_.banner_for(*f), false);
    return;
  }
  if (answer.verdict == tunnel::GateVerdict::same_key_held && !f->waiting) {
    // As on one node: the key's other session (on another node) keeps the name until it ends.
    f->registration = {};
    f->gate_ticket.reset();
    f->waiting = true;
    ctx_->log->info(
        "forward.waiting conn=s{} name={} reason=\"held by another session of "
        "the same key on another node\"",
        id_, f->hostname);
    terminal_.write("snigate: waiting for " + f->hostname +
                        ": another session of your key holds it; it moves here the moment that "
                        "session ends (or run `tls --takeover` to move it now)",
                    true);
    return;
  }
  if (answer.verdict == tunnel::GateVerdict::same_key_held) {
    f->registration = {};
    f->gate_ticket.reset();
    return;  // still waiting: the tick tries again
  }
  ctx_->stats->forwards_refused++;
  ctx_->log->warn("forward.refuse conn=s{} name={} reason=\"{}\"", id_, f->hostname,
                  answer.message);
  terminal_.write("snigate: cannot forward " + f->hostname + ": " + answer.message, true);
  forwards_.remove(key, "refused");
  end_if_nothing_served();
  request_pump();
}

// ---- direct-tcpip: ssh -L / -W to internal endpoints (direct_channel.*) -----------------

void Session::on_direct_tcpip(ssh_message msg) {
  // Counted like every other channel open (the per-second request budget), answered or not.
  const bool within_budget = request_allowed();
  if (!key_ || (state_ != State::authenticated && state_ != State::ready)) {
    ssh_message_reply_default(msg);
    return;
  }
  direct_.open(msg, session_.get(), *key_,
               boost::asio::ip::tcp::endpoint(peer_address_, peer_port_),
               !terminal_.exists() && forwards_.empty() && direct_.size() == 0, within_budget);
  request_pump();  // the refusal (if any) is written after the pump
}

// ---- forwards --------------------------------------------------------------------------

void Session::on_global_request(ssh_message msg) {
  switch (ssh_message_subtype(msg)) {
    case SSH_GLOBAL_REQUEST_TCPIP_FORWARD:
    case SSH_GLOBAL_REQUEST_CANCEL_TCPIP_FORWARD:
      if (std::uint64_t ignored = 0; !forward_requests_.allow(ignored)) {
        ctx_->stats->forwards_refused++;
        warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                     "forward.refuse conn=s{} reason=\"over {} forward requests a second\"{}", id_,
                     kForwardRequestsPerSecond);
        ssh_message_reply_default(msg);
      } else if (ssh_message_subtype(msg) == SSH_GLOBAL_REQUEST_TCPIP_FORWARD) {
        handle_tcpip_forward(msg);
      } else {
        handle_cancel_forward(msg);
      }
      break;
    case SSH_GLOBAL_REQUEST_KEEPALIVE:
      // Once this callback is installed, client keepalives are ours to answer (over the
      // request budget with a refusal, which a keepalive client takes as an answer too).
      if (request_allowed()) {
        ssh_message_global_request_reply_success(msg, 0);
      } else {
        ssh_message_reply_default(msg);
      }
      break;
    default:
      request_allowed();  // refused either way: only counted
      ssh_message_reply_default(msg);
      break;
  }
#if LIBSSH_VERSION_INT < SSH_VERSION_INT(0, 11, 0)
  // libssh 0.10 frees the message but not its bind address after this callback (fixed
  // upstream in 0.11): free it here, or every forward request leaks its hostname.
  if (const char* address = ssh_message_global_request_address(msg)) {
    ssh_string_free_char(const_cast<char*>(address));
  }
#endif
}

void Session::refuse_forward(ssh_message msg, const std::string& address, int port,
                             const std::string& why) {
  asked_for_forwards_ = true;  // a publishing session, not a teammate's ssh -L / -W one
  ctx_->stats->forwards_refused++;
  ctx_->log->warn("forward.refuse conn=s{} fp={} addr=\"{}\" port={} reason=\"{}\"", id_,
                  key_ ? key_->fingerprint : "-", printable(address), port, why);
  std::string notice = "snigate: cannot forward " + printable(address, 100) + ":" +
                       std::to_string(port) + ": " + why;
  if (state_ == State::ready) {
    terminal_.write(notice, true);
  } else {
    terminal_.notice(std::move(notice));
  }
  ssh_message_reply_default(msg);
}

void Session::handle_tcpip_forward(ssh_message msg) {
  const char* raw_address = ssh_message_global_request_address(msg);
  const std::string address = raw_address ? raw_address : "";
  const int port = ssh_message_global_request_port(msg);
  if (!key_ || state_ == State::closing || state_ == State::closed) {
    ssh_message_reply_default(msg);
    return;
  }
  ForwardTable::Prepared p = forwards_.prepare(address, static_cast<std::uint32_t>(port), *key_);
  if (!p.forward) {
    refuse_forward(msg, address, port, p.refusal);
    return;
  }
  Forward& f = *p.forward;
  f.endpoint = std::make_shared<ForwardEndpoint>(weak_from_this(), p.key, id_);
  f.buffered = std::make_shared<tunnel::BufferBudget>(kEndpointBufferBudget);
  if (state_ == State::ready) {
    // Added after the command (e.g. with ~C): claim now, with the session's options.
    if (const std::string refusal = forwards_.claim(p.key, f, claim_options()); !refusal.empty()) {
      refuse_forward(msg, address, port, refusal);
      return;
    }
    if (!gate_claim(p.key, f)) {
      terminal_.write(forwards_.banner_for(f), false);
    }
  }
  ssh_message_global_request_reply_success(msg, static_cast<std::uint16_t>(f.bind_port));
  forwards_.add(p.key, std::move(f));
  asked_for_forwards_ = true;
  info_dirty_ = true;
}

void Session::handle_cancel_forward(ssh_message msg) {
  const char* raw_address = ssh_message_global_request_address(msg);
  const std::string address = raw_address ? raw_address : "";
  const auto port = static_cast<std::uint32_t>(ssh_message_global_request_port(msg));
  if (const auto it = forwards_.find_bind(address, port); it != forwards_.end()) {
    forwards_.remove(it, "cancel_forward");
    info_dirty_ = true;
    ssh_message_global_request_reply_success(msg, 0);
    return;
  }
  ssh_message_reply_default(msg);
}

// ---- public connections ----------------------------------------------------------------

void Session::deliver(std::size_t forward_key, tunnel::IncomingConnection conn) {
  // Runs on the accepting thread: move the transport (the visitor's socket, a teammate's local
  // pair end, or a relay's TLS stream) to this session's io_context.
  conn.stream = conn.take_stream();
  if (!conn.stream->detach()) {
    return;
  }
  boost::asio::post(ioc_,
                    [self = shared_from_this(), forward_key, conn = std::move(conn)]() mutable {
                      if (conn.stream->attach(self->ioc_)) {
                        self->start_bridge(forward_key, std::move(conn));
                      }
                    });
}

tunnel::EndpointLabel Session::label_for(const Forward& f) const {
  return tunnel::EndpointLabel{f.id, forwards_.url_for(f), id_, key_ ? key_->fingerprint : "",
                               key_ ? key_->comment : ""};
}

void Session::start_bridge(std::size_t forward_key, tunnel::IncomingConnection conn) {
  Forward* f = forwards_.find(forward_key);
  if (f == nullptr || state_ != State::ready || f->gate_pending) {
    // The endpoint went away between routing and now (names are only claimed once ready, so
    // any other state is a session just ending), or the cluster has not given it the name yet.
    conn.alert_and_close(gw::kAlertUnrecognizedName);
    return;
  }
  if (std::string why; !access_.permits(conn.client.address(), &why)) {
    ctx_->stats->connections_cidr_denied++;
    refuse_routed(std::move(conn), *f, "cidr_denied", std::nullopt, why);
    return;
  }
  if (f->open_connections >= ctx_->max_connections_per_endpoint) {
    ctx_->stats->connections_over_endpoint_limit++;
    refuse_routed(std::move(conn), *f, "limit", gw::kAlertInternalError,
                  "this endpoint already has " + std::to_string(f->open_connections) +
                      " open connections (--max-connections-per-endpoint)");
    return;
  }
  if (opens_in_flight_ >= kMaxOpensInFlight) {
    ctx_->stats->connections_over_open_limit++;
    refuse_routed(std::move(conn), *f, "limit", gw::kAlertInternalError,
                  "your ssh client has " + std::to_string(opens_in_flight_) +
                      " connections it has not answered yet (is it stopped or overloaded?)");
    return;
  }
  ctx_->tunnel_log->debug("bridge.start conn=t{} s={} sni={}", conn.id, id_, conn.server_name);
  const tunnel::BufferBudgets budgets{f->buffered, key_budget_};
  auto channel = std::make_shared<ForwardedChannel>(*this, session_.get(), f->bind_address,
                                                    f->bind_port, conn.client.address().to_string(),
                                                    conn.client.port(), budgets);
  // TCP_NODELAY: the public listener set it at accept (sni_router/listener.cpp); a relay's
  // stream and a local pair need none.
  const tunnel::ConnectionStart start = conn.start();
  auto bridge = std::make_shared<tunnel::Bridge>(
      conn.take_stream(), std::move(conn.peeked), start, label_for(*f), std::move(channel),
      bridge_config_, ctx_->stats, ctx_->tunnel_log,
      [weak = weak_from_this(), forward_key](const tunnel::ConnectionClosed& ev) {
        if (auto self = weak.lock()) {
          self->bridge_closed(forward_key, ev);
        }
      },
      budgets);
  bridges_.emplace(bridge->id(), BridgeEntry{bridge, forward_key});
  ++f->open_connections;
  info_dirty_ = true;
  bridge->start();
}

void Session::refuse_routed(tunnel::IncomingConnection conn, const Forward& f, const char* refusal,
                            std::optional<std::uint8_t> alert, const std::string& why) {
  const std::string ip = conn.client.address().to_string();
  ctx_->tunnel_log->warn("tunnel.refuse conn=t{} s={} sni={} client={} reason=\"{}\"", conn.id, id_,
                         conn.server_name, ip, why);
  std::size_t sent = 0;
  if (alert) {
    sent = conn.alert_and_close(*alert);
  } else {
    conn.close();
  }
  const auto label = label_for(f);
  ctx_->events->emit(tunnel::connection_closed(conn.start(), &label, conn.peeked.size(), sent,
                                               "refused", refusal));
  terminal_.connection_line("snigate: connection from " + ip + " refused: " + why);
}

void Session::bridge_closed(std::size_t forward_key, const tunnel::ConnectionClosed& ev) {
  ++connections_total_;
  info_dirty_ = true;
  if (Forward* f = forwards_.find(forward_key)) {
    --f->open_connections;
    f->bytes_in += ev.bytes_in;
    f->bytes_out += ev.bytes_out;
  }
  bytes_in_total_ += ev.bytes_in;
  bytes_out_total_ += ev.bytes_out;
  finished_bridges_.push_back(ev.conn_id);  // erased after the pump: it may be on the stack
  request_pump();
  ctx_->events->emit(ev);
  if (ev.close_reason == "upstream_refused") {
    terminal_.connection_line("snigate: connection from " + ev.client_ip + " to " + ev.server_name +
                              " failed: your ssh client could not reach the -R target (is your "
                              "upstream running?)");
  } else if (command_ && command_->verbose) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(ev.duration).count();
    terminal_.connection_line("snigate: " + ev.client_ip + ":" + std::to_string(ev.client_port) +
                              " " + ev.server_name + " " + std::to_string(ms) +
                              "ms in=" + std::to_string(ev.bytes_in) +
                              " out=" + std::to_string(ev.bytes_out) + " " + ev.close_reason);
  }
}

void Session::publish_info() {
  info_dirty_ = false;
  SessionInfo info;
  info.id = id_;
  info.peer = peer_;
  info.user = user_;
  info.key_fingerprint = key_ ? key_->fingerprint : "";
  info.key_name = key_ ? key_->comment : "";
  // The API's three states; the finer ones are for logs.
  info.state = state_ == State::key_exchange || state_ == State::authenticating ? "authenticating"
               : state_ == State::closing || state_ == State::closed            ? "closing"
                                                                                : "active";
  info.started_at = started_wall_;
  info.open_connections = bridges_.size() - finished_bridges_.size();
  info.endpoints = forwards_.infos();
  std::lock_guard lock(info_mutex_);
  info_ = std::move(info);
}

void Session::drain() {
  boost::asio::post(ioc_, [self = shared_from_this()] {
    if (self->state_ == State::closing || self->state_ == State::closed) {
      return;
    }
    self->draining_ = true;
    self->terminal_.write("snigate: the gateway is shutting down; open connections may finish",
                          true);
    self->forwards_.remove_all("shutdown");  // no new connections; open ones go on
    self->info_dirty_ = true;
    self->close_reason_ = "shutdown";
    self->exit_status_ = 1;  // ended by the gateway: autossh and systemd restart the client
    self->request_pump();    // after_pump() ends the session once its bridges are done
  });
}

// ---- key reload ------------------------------------------------------------------------

void Session::evict() {
  boost::asio::post(ioc_, [self = shared_from_this()] {
    if (self->state_ != State::key_exchange && self->state_ != State::authenticating) {
      return;
    }
    self->ctx_->log->info(
        "session.evicted conn=s{} peer={} reason=\"every unauthenticated slot "
        "was taken: room for a login from another address\"",
        self->id_, self->peer_);
    self->close_reason_ = "evicted";
    self->finish_close();
  });
}

void Session::keys_changed(std::shared_ptr<const keys::KeyStore> store) {
  boost::asio::post(ioc_, [self = shared_from_this(), store = std::move(store)] {
    self->apply_keys(*store);
    self->request_pump();
  });
}

void Session::apply_keys(const keys::KeyStore& store) {
  if (!key_ || state_ == State::closing || state_ == State::closed) {
    return;
  }
  const keys::AuthorizedKey* now = store.find(key_->type, key_->blob_base64);
  if (now == nullptr) {
    ctx_->log->warn("session.revoked conn=s{} fp={} reason=\"key removed from authorized_keys\"",
                    id_, key_->fingerprint);
    terminal_.write("snigate: your key was removed from authorized_keys; closing this session",
                    true);
    close_reason_ = "key_revoked";
    exit_status_ = 1;
    begin_close();
    return;
  }
  if (std::string why; !keys::source_allowed(now->options, peer_address_, &why)) {
    ctx_->log->warn("session.revoked conn=s{} fp={} reason=\"from= no longer allows {}: {}\"", id_,
                    key_->fingerprint, peer_ip_, why);
    terminal_.write("snigate: your key's from= in authorized_keys no longer allows " + peer_ip_ +
                        "; closing this session",
                    true);
    close_reason_ = "key_revoked";
    exit_status_ = 1;
    begin_close();
    return;
  }
  key_ = *now;  // new options (permitlisten, expiry, ...) apply from now on
  for (auto it = forwards_.begin(); it != forwards_.end();) {
    const std::string refusal = forwards_.no_longer_allowed(it->second, *key_, store);
    if (refusal.empty()) {
      ++it;
      continue;
    }
    terminal_.write("snigate: " + forwards_.url_for(it->second) + " removed: " + refusal, true);
    // Its open connections end too, as when the key is removed: the key may no longer serve it.
    abort_connections("key_no_longer_allows", it->first);
    it = forwards_.remove(it, "key_no_longer_allows");
    info_dirty_ = true;
  }
}

// ---- closing ---------------------------------------------------------------------------

void Session::close_from_outside(std::string message) {
  boost::asio::post(ioc_, [self = shared_from_this(), message = std::move(message)] {
    if (self->state_ == State::closing || self->state_ == State::closed) {
      return;  // already ending on its own: the first reason stands
    }
    // The admin API fills in kAdminCloseMessage when the admin gave none: say it once.
    self->terminal_.write(
        "snigate: " + std::string(kAdminCloseMessage) +
            (message.empty() || message == kAdminCloseMessage ? std::string() : ": " + message),
        true);
    self->close_message_ = message;
    self->close_reason_ = "admin_close";
    self->exit_status_ = 1;  // ended by the gateway: autossh and systemd restart the client
    self->begin_close();
    self->request_pump();
  });
}

void Session::teardown_endpoints() {
  forwards_.remove_all("session_ended");  // vanish now, before the last bytes are flushed
  info_dirty_ = true;
  abort_connections("session_closed", std::nullopt);
  direct_.abort_all("session_closed");
}

void Session::abort_connections(const char* reason, std::optional<std::size_t> forward_key) {
  auto bridges = bridges_;  // abort() reports back into bridges_
  for (auto& [id, entry] : bridges) {
    if (!forward_key || entry.forward_key == *forward_key) {
      entry.bridge->abort(reason);
    }
  }
}

void Session::begin_close() {
  if (state_ == State::closing || state_ == State::closed) {
    return;
  }
  set_state(State::closing);
  closing_since_ = Clock::now();
  teardown_endpoints();
  if (!terminal_.is_open()) {
    finish_close();  // `-N`: nothing left to show the user
    return;
  }
  // The client exits once it has the exit status and the channel close; it then
  // disconnects, which finish_close() sees (or kCloseLinger passes).
  terminal_.end(exit_status_);
}

void Session::finish_close() {
  if (state_ == State::closed) {
    return;
  }
  const bool was_open = state_ != State::key_exchange && state_ != State::authenticating;
  if (state_ != State::closing) {
    set_state(State::closing);
    teardown_endpoints();
  }
  set_state(State::closed);
  ctx_->sessions->remove(id_);
  if (was_open && key_) {
    tunnel::SessionEnded ev;
    ev.session_id = id_;
    ev.reason = close_reason_;
    ev.message = close_message_;
    ev.duration = Clock::now() - started_at_;
    ev.client_ip = peer_ip_;
    ev.client_port = peer_port_;
    ev.key_fingerprint = key_->fingerprint;
    ev.key_name = key_->comment;
    ev.connections = connections_total_;
    ev.bytes_in = bytes_in_total_;
    ev.bytes_out = bytes_out_total_;
    ev.time = std::chrono::system_clock::now();
    ctx_->events->emit(ev);
  }
  // The channels of bridges aborted above were handed back (adopt): settle what can be, the
  // rest goes with ssh_free.
  std::erase_if(adopted_, [](const auto& channel) { return channel->settle(); });
  if (session_ && ssh_is_connected(session_.get())) {
    ssh_disconnect(session_.get());
  }
  // ssh_disconnect() freed every channel: nothing may reach one through us from here on (a
  // message posted by another thread, an adopted open). This is the one place that happens.
  terminal_.detach();
  for (auto& channel : adopted_) {
    channel->detach();
  }
  adopted_.clear();
  boost::system::error_code ec;
  fd_watch_.close(ec);
  tick_.cancel();
  resume_.cancel();
  ctx_->log->info("session.close conn=s{} peer={} reason=\"{}\"{}", id_, peer_, close_reason_,
                  was_open ? "" : " (before auth)");
}

}  // namespace gw::sshd

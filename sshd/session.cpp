#include "sshd/session.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <random>

#include "common/printable.hpp"
#include "keys/source_match.hpp"
#include "sshd/bridge.hpp"
#include "tunnel/tls_alert.hpp"

namespace gw::sshd {
namespace {

/// dopoll rounds per wake-up (libssh reads 4 KiB a round) before yielding to other work.
constexpr int kMaxPollRounds = 64;
/// Forwards one session may hold.
constexpr std::size_t kMaxForwardsPerSession = 64;
/// tcpip-forward and cancel requests one session may send a second: room for every forward at
/// login, while a client churning forwards (work, log lines and notices for nothing) is cut off.
constexpr std::uint32_t kForwardRequestsPerSecond = 100;
/// Failed auth attempts before the connection is dropped (OpenSSH MaxAuthTries is 6).
constexpr int kMaxAuthFailures = 6;
/// How long a closing session waits for its last messages to reach the user.
constexpr auto kCloseLinger = std::chrono::seconds(5);

using Clock = std::chrono::steady_clock;

const char* to_string(Session::State s) {
  switch (s) {
    case Session::State::key_exchange: return "key_exchange";
    case Session::State::authenticating: return "authenticating";
    case Session::State::authenticated: return "authenticated";
    case Session::State::ready: return "ready";
    case Session::State::closing: return "closing";
    case Session::State::closed: return "closed";
  }
  return "?";
}

/// Routes to one forward of one session; the registry holds it weakly.
class ForwardEndpoint final : public tunnel::TunnelEndpoint {
 public:
  ForwardEndpoint(std::weak_ptr<Session> session, std::size_t key)
      : session_(std::move(session)), key_(key) {}
  void deliver(tunnel::IncomingConnection conn) override {
    if (auto s = session_.lock()) {
      s->deliver(key_, std::move(conn));
    } else {
      tunnel::send_alert_and_close(conn.socket, gw::kAlertUnrecognizedName);
    }
  }
  void displaced(const std::string&) override {
    if (auto s = session_.lock()) {
      s->forward_displaced(key_);
    }
  }

 private:
  std::weak_ptr<Session> session_;
  std::size_t key_;
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

std::uint64_t random_u64() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
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
int exec_cb(ssh_session, ssh_channel, const char* command, void* self) {
  return static_cast<Session*>(self)->on_exec(command);
}
int shell_cb(ssh_session, ssh_channel, void* self) {
  return static_cast<Session*>(self)->on_shell();
}
int pty_cb(ssh_session, ssh_channel, const char*, int, int, int, int, void*) {
  return 0;  // accept, so interactive users get no "PTY allocation failed" warning
}
int pty_resize_cb(ssh_session, ssh_channel, int, int, int, int, void*) { return 0; }
int shell_data_cb(ssh_session, ssh_channel, void* data, std::uint32_t len, int, void* self) {
  static_cast<Session*>(self)->on_session_channel_data(data, len);
  return static_cast<int>(len);
}
void shell_close_cb(ssh_session, ssh_channel, void* self) {
  static_cast<Session*>(self)->on_session_channel_eof_or_close();
}

}  // namespace

Session::Session(boost::asio::io_context& ioc, std::shared_ptr<const ServerContext> ctx,
                 std::uint64_t id)
    : ioc_(ioc),
      ctx_(std::move(ctx)),
      id_(id),
      fd_watch_(ioc),
      tick_(ioc),
      forward_requests_(kForwardRequestsPerSecond) {
  started_at_ = last_peer_data_ = last_keepalive_sent_ = Clock::now();
}

Session::~Session() {
  for (auto& [id, bridge] : bridges_) {
    bridge->finished_ = true;  // the session's ssh_free below frees its channel
    bridge->channel_ = nullptr;
    boost::system::error_code ec;
    bridge->conn_.socket.close(ec);
  }
  if (event_ && session_) {
    ssh_event_remove_session(event_.get(), session_.get());
  }
}

void Session::set_state(State next) {
  info_dirty_ = true;
  ctx_->log->debug("session.state conn=s{} {} -> {}", id_, to_string(state_), to_string(next));
  if (next != State::key_exchange && next != State::authenticating) {
    startup_.release();
  }
  state_ = next;
}

void Session::start(ssh_bind bind, std::mutex& bind_mutex, int fd,
                    const boost::asio::ip::tcp::endpoint& peer, StartupSlot slot) {
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
  server_cb_.channel_open_request_session_function = channel_open_cb;
  ssh_callbacks_init(&server_cb_);
  ssh_set_server_callbacks(session_.get(), &server_cb_);
  session_cb_.userdata = this;
  session_cb_.global_request_function = global_request_cb;
  ssh_callbacks_init(&session_cb_);
  ssh_set_callbacks(session_.get(), &session_cb_);
  ssh_set_auth_methods(session_.get(), SSH_AUTH_METHOD_PUBLICKEY);
  ssh_set_blocking(session_.get(), 0);

  // Called once: in non-blocking mode it may report SSH_AGAIN forever; the event loop and
  // callbacks drive the rest of the exchange.
  if (ssh_handle_key_exchange(session_.get()) == SSH_ERROR) {
    ctx_->log->info("session.kex_failed conn=s{} peer={} error=\"{}\"", id_, peer_,
                    printable(ssh_get_error(session_.get())));
    set_state(State::closed);
    return;
  }
  event_.reset(ssh_event_new());
  ssh_event_add_session(event_.get(), session_.get());
  fd_watch_.assign(::dup(fd));
  ctx_->sessions->add(id_, weak_from_this());
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
  int rounds = 0;
  for (; rounds < kMaxPollRounds; ++rounds) {
    const int rc = ssh_event_dopoll(event_.get(), 0);
    if (rc != SSH_OK) {
      break;  // SSH_AGAIN: nothing ready; SSH_ERROR: checked through the status below
    }
  }
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
  if (state_ == State::closed) {
    return;
  }
  if (rounds == kMaxPollRounds) {
    request_pump();  // more is waiting: continue after other connections had a turn
  }
  arm_waits();
}

void Session::after_pump() {
  if (auth_failures_ >= kMaxAuthFailures && !key_) {
    finish_close();
    return;
  }
  if (user_quit_) {
    user_quit_ = false;
    if (state_ != State::closing && state_ != State::closed) {
      close_reason_ = "user_quit";  // not when we closed first: the client is only answering
      begin_close();
    }
  }
  if (command_pending_) {
    command_pending_ = false;
    run_command();
  }
  // Bridges that callbacks flagged, serviced outside the callbacks. A bridge that is still
  // blocked re-queues itself for the next pump.
  std::vector<std::shared_ptr<Bridge>> queue;
  queue.swap(service_queue_);
  for (auto& b : queue) {
    b->service_queued_ = false;
    b->service();
  }
  for (const auto id : finished_bridges_) {
    bridges_.erase(id);
  }
  finished_bridges_.clear();
  settle_abandoned_opens();
  if (draining_ && bridges_.empty()) {
    begin_close();
  }
  if (info_dirty_) {
    publish_info();
  }
}

void Session::arm_waits() {
  if (!read_armed_) {
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
  if (!write_armed_ && (ssh_get_poll_flags(session_.get()) & SSH_WRITE_PENDING) != 0) {
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

void Session::queue_service(std::shared_ptr<Bridge> bridge) {
  if (!bridge->service_queued_) {
    bridge->service_queued_ = true;
    service_queue_.push_back(std::move(bridge));
  }
}

void Session::bridge_finished(std::uint64_t conn_id) { finished_bridges_.push_back(conn_id); }

void Session::settle_abandoned_opens() {
  const auto before = abandoned_opens_.size();
  std::erase_if(abandoned_opens_, [](const PendingOpen& o) {
    const int rc = ssh_channel_open_reverse_forward(o.channel, o.address.c_str(), o.port,
                                                    o.origin.c_str(), o.origin_port);
    if (rc == SSH_AGAIN) {
      return false;
    }
    // Answered: ssh_channel_free closes an opened channel (the client then drops its upstream
    // connection) and frees a denied one.
    ssh_channel_free(o.channel);
    return true;
  });
  if (abandoned_opens_.size() != before) {
    after_channel_write();
  }
}

void Session::on_tick() {
  if (state_ == State::closed) {
    return;
  }
  const auto now = Clock::now();
  switch (state_) {
    case State::key_exchange:
    case State::authenticating:
      if (now - started_at_ > ctx_->login_grace) {
        close_reason_ = "login_timeout";
        finish_close();
        return;
      }
      break;
    case State::authenticated:
      // `ssh -N` never opens a session channel: start routing after a short grace. With a
      // session channel, wait (bounded) for its command, whose options apply first.
      if ((shell_ == nullptr && now - authenticated_at_ > ctx_->no_command_grace) ||
          now - authenticated_at_ > ctx_->command_wait) {
        become_ready();
      }
      break;
    case State::ready:
      if (user_lines_dropped_ > 0) {
        write_user("snigate: (" + std::to_string(user_lines_dropped_) +
                       " more connection lines not shown)",
                   false);
        user_lines_dropped_ = 0;
      }
      user_lines_this_second_ = 0;
      if (key_ && keys::is_expired(key_->options, std::chrono::duration_cast<std::chrono::seconds>(
                                                    std::chrono::system_clock::now().time_since_epoch())
                                                    .count())) {
        write_user("snigate: your key expired (expiry-time in authorized_keys); closing", true);
        close_reason_ = "key_expired";
        exit_status_ = 1;
        begin_close();
        break;
      }
      for (auto& [id, b] : bridges_) {
        b->check_deadlines(now, ctx_->idle_timeout);
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
  arm_waits();
  tick_.expires_after(state_ == State::authenticated ? std::chrono::milliseconds(50)
                                                     : std::chrono::milliseconds(1000));
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
  // Every refusal counts, probes included: a client cycling through wrong keys only ever
  // probes, and one retrying a known key (expired, wrong source, bad signature) must not get
  // unlimited signature checks either. Like OpenSSH's MaxAuthTries and "Failed publickey".
  const auto deny = [this] {
    ctx_->stats->auth_failures++;
    if (++auth_failures_ >= kMaxAuthFailures) {
      close_reason_ = "auth_failures";
      request_pump();  // closed in after_pump(), outside this callback
    }
    return SSH_AUTH_DENIED;
  };
  char* b64 = nullptr;
  if (ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK) {
    return deny();
  }
  const std::string blob = b64;
  ssh_string_free_char(b64);
  const char* type = ssh_key_type_to_char(ssh_key_type(key));
  const auto store = ctx_->keys->get();
  const keys::AuthorizedKey* found = store ? store->find(type ? type : "", blob) : nullptr;
  if (found == nullptr) {
    warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                 "auth.reject conn=s{} peer={} user=\"{}\" type={} reason=\"key not in "
                 "authorized_keys\"{}",
                 id_, peer_, printable(user_), type ? type : "?");
    return deny();
  }
  if (found->options.expiry_unix &&
      std::chrono::system_clock::now() >
          std::chrono::system_clock::time_point(std::chrono::seconds(*found->options.expiry_unix))) {
    warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                 "auth.reject conn=s{} peer={} loc={} fp={} reason=\"key expired\"{}", id_,
                 peer_, found->loc, found->fingerprint);
    return deny();
  }
  if (std::string why; !keys::source_allowed(found->options, peer_address_, &why)) {
    warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                 "auth.reject conn=s{} peer={} loc={} fp={} reason=\"{}\"{}", id_, peer_,
                 found->loc, found->fingerprint, why);
    return deny();
  }
  if (signature_state == SSH_PUBLICKEY_STATE_NONE) {
    return SSH_AUTH_SUCCESS;  // the probe: "would this key do?"
  }
  if (signature_state != SSH_PUBLICKEY_STATE_VALID) {
    warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                 "auth.reject conn=s{} peer={} loc={} fp={} reason=\"bad signature\"{}", id_,
                 peer_, found->loc, found->fingerprint);
    return deny();
  }
  key_ = *found;
  authenticated_at_ = Clock::now();
  if (ctx_->sessions->set_key(id_, found->fingerprint) > ctx_->max_sessions_per_key) {
    // Accepted, so the user can be told why (a refused auth only says "Permission denied");
    // the session ends as soon as it can show the message.
    over_limit_ = "this key already has " + std::to_string(ctx_->max_sessions_per_key) +
                  " sessions open (the limit): close one first";
  }
  set_state(State::authenticated);
  ctx_->log->info("auth.accept conn=s{} peer={} user=\"{}\" key=\"{}\" loc={} fp={}", id_, peer_,
                  printable(user_), printable(found->comment), found->loc, found->fingerprint);
  ctx_->events->emit(tunnel::SessionStarted{id_, peer_ip_, peer_port_, user_, found->fingerprint,
                                            found->comment, std::chrono::system_clock::now()});
  return SSH_AUTH_SUCCESS;
}

// ---- the session channel and the `tls` command -----------------------------------------

ssh_channel Session::on_session_channel_open() {
  if (shell_ != nullptr || key_ == std::nullopt) {
    return nullptr;  // one session channel per connection
  }
  shell_ = ssh_channel_new(session_.get());
  if (shell_ == nullptr) {
    return nullptr;
  }
  shell_cb_.userdata = this;
  shell_cb_.channel_exec_request_function = exec_cb;
  shell_cb_.channel_shell_request_function = shell_cb;
  shell_cb_.channel_pty_request_function = pty_cb;
  shell_cb_.channel_pty_window_change_function = pty_resize_cb;
  shell_cb_.channel_data_function = shell_data_cb;
  shell_cb_.channel_close_function = shell_close_cb;
  ssh_callbacks_init(&shell_cb_);
  ssh_set_channel_callbacks(shell_, &shell_cb_);
  return shell_;
}

int Session::on_exec(const char* command) {
  if (command_seen_) {
    return 1;
  }
  command_seen_ = true;
  pending_command_ = command ? command : "";
  command_pending_ = true;  // answered now; output may only follow after this returns
  return 0;
}

int Session::on_shell() { return on_exec(""); }

void Session::on_session_channel_data(const void* data, std::uint32_t len) {
  // With a pty, Ctrl-C and Ctrl-D arrive as bytes: treat them as "I'm done".
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::uint32_t i = 0; i < len; ++i) {
    if (p[i] == 0x03 || p[i] == 0x04) {
      user_quit_ = true;
      request_pump();
      return;
    }
  }
}

void Session::on_session_channel_eof_or_close() {
  user_quit_ = true;
  request_pump();
}

void Session::write_user(std::string_view text, bool to_stderr) {
  if (shell_ == nullptr || !ssh_channel_is_open(shell_)) {
    return;
  }
  // CRLF line ends: correct with and without a pty.
  std::string line;
  for (const char c : text.substr(0, text.find_last_not_of('\n') + 1)) {
    if (c == '\n') {
      line += '\r';
    }
    line += c;
  }
  line += "\r\n";
  if (to_stderr) {
    ssh_channel_write_stderr(shell_, line.data(), static_cast<std::uint32_t>(line.size()));
  } else {
    ssh_channel_write(shell_, line.data(), static_cast<std::uint32_t>(line.size()));
  }
  after_channel_write();
}

std::string Session::url_for(const Forward& f) const {
  std::string url = "tls://" + f.hostname;
  if (ctx_->advertise_port != 443) {
    url += ":" + std::to_string(ctx_->advertise_port);
  }
  return url;
}

std::string Session::banner_for(const Forward& f) const {
  // The client never tells the server where its -R points, so name the forward instead.
  return "snigate: Forwarding " + url_for(f) + " -> your -R " + f.bind_address + ":" +
         std::to_string(f.bind_port) + " target (TLS passes through untouched)";
}

void Session::run_command() {
  const CommandResult parsed = parse_command(pending_command_);
  for (const auto& n : notices_) {
    write_user(n, true);
  }
  notices_.clear();
  if (!over_limit_.empty()) {
    refuse_session(over_limit_);
    return;
  }
  if (!parsed.command) {
    ctx_->log->info("session.command_refused conn=s{} command=\"{}\"", id_,
                    printable(pending_command_));
    write_user(parsed.error, true);
    exit_status_ = 1;
    close_reason_ = "command_refused";
    begin_close();
    return;
  }
  command_ = *parsed.command;
  for (const auto& [list, out] : {std::pair{&command_->allow_cidr, &access_.allow},
                                   std::pair{&command_->deny_cidr, &access_.deny}}) {
    for (const auto& text : *list) {
      const auto cidr = tunnel::Cidr::parse(text);
      if (!cidr) {
        refuse_session("cannot use CIDR " + printable(text, 60) +
                       " (an IPv4-mapped IPv6 prefix must be /96 or longer)");
        return;
      }
      out->push_back(*cidr);
    }
  }
  if (command_->help) {
    write_user(tls_help_text(), false);
    for (const auto& [key, f] : forwards_) {
      write_user(banner_for(f), false);
    }
    close_reason_ = "help";
    begin_close();
    return;
  }
  become_ready();  // claims the names: refusals are printed there
  if (forwards_.empty()) {
    write_user(
        "snigate: no endpoints: add -R NAME:443:localhost:PORT to your ssh command "
        "(or -R 443:localhost:PORT for a generated name)",
        true);
    exit_status_ = 1;
    close_reason_ = "no_endpoints";
    begin_close();
    return;
  }
  for (const auto& [key, f] : forwards_) {
    write_user(banner_for(f), false);
  }
}

void Session::refuse_session(const std::string& why) {
  ctx_->log->warn("session.refuse conn=s{} fp={} reason=\"{}\"", id_,
                  key_ ? key_->fingerprint : "-", why);
  write_user("snigate: " + why, true);
  exit_status_ = 1;
  close_reason_ = "over_limit";
  begin_close();
}

void Session::become_ready() {
  if (state_ != State::authenticated) {
    return;
  }
  if (!over_limit_.empty()) {
    refuse_session(over_limit_);  // `-N`: only the log says why
    return;
  }
  set_state(State::ready);
  // Names are claimed now, when the command's --pool/--takeover are known; until then the
  // endpoints route nowhere (DESIGN.md section 3: options apply before the first connection).
  for (auto it = forwards_.begin(); it != forwards_.end();) {
    const std::string refusal = claim(it->first, it->second);
    if (refusal.empty()) {
      ++it;
      continue;
    }
    ctx_->stats->forwards_refused++;
    ctx_->log->warn("forward.refuse conn=s{} name={} reason=\"{}\"", id_, it->second.hostname,
                    refusal);
    write_user("snigate: cannot forward " + it->second.hostname + ": " + refusal, true);
    it = remove_forward(it, "refused");
  }
}

std::string Session::claim(std::size_t key, Forward& f) {
  tunnel::ClaimRequest request;
  request.name = f.hostname;
  request.endpoint = f.endpoint;
  request.key_fingerprint = key_->fingerprint;
  request.pool = command_ && command_->pool;
  request.takeover = command_ && command_->takeover;
  request.pool_group = key_->options.permit_listen.empty() ? key_->fingerprint : "";
  tunnel::ClaimResult result = ctx_->registry->claim(std::move(request));
  if (!result.registration) {
    return result.refusal;
  }
  f.registration = std::move(*result.registration);
  for (const auto& old : result.displaced) {
    old->displaced(f.hostname);  // posts to the old session; never runs it here
  }
  f.id = "ep_" + std::to_string(ctx_->stats->next_endpoint_id++);
  f.created_at = std::chrono::system_clock::now();
  f.pool = command_ && command_->pool;
  info_dirty_ = true;
  ctx_->log->info("endpoint.created conn=s{} url={} id={} fp={} key=\"{}\" pool={} forward={}",
                  id_, url_for(f), f.id, key_->fingerprint, printable(key_->comment), f.pool, key);
  ctx_->events->emit(tunnel::EndpointCreated{f.id, url_for(f), id_, key_->fingerprint,
                                             key_->comment, f.pool, f.created_at});
  return {};
}

void Session::forward_displaced(std::size_t key) {
  boost::asio::post(ioc_, [self = shared_from_this(), key] {
    const auto it = self->forwards_.find(key);
    if (it == self->forwards_.end()) {
      return;
    }
    self->write_user("snigate: " + self->url_for(it->second) +
                         " was taken over by a newer session of your key (--takeover)",
                     true);
    self->remove_forward(it, "taken_over");
    if (self->forwards_.empty()) {
      self->close_reason_ = "taken_over";
      self->begin_close();
    }
    self->request_pump();
  });
}

// ---- forwards --------------------------------------------------------------------------

void Session::on_global_request(ssh_message msg) {
  switch (ssh_message_subtype(msg)) {
    case SSH_GLOBAL_REQUEST_TCPIP_FORWARD:
    case SSH_GLOBAL_REQUEST_CANCEL_TCPIP_FORWARD:
      if (std::uint64_t ignored = 0; !forward_requests_.allow(ignored)) {
        ctx_->stats->forwards_refused++;
        warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                     "forward.refuse conn=s{} reason=\"over {} forward requests a second\"{}",
                     id_, kForwardRequestsPerSecond);
        ssh_message_reply_default(msg);
      } else if (ssh_message_subtype(msg) == SSH_GLOBAL_REQUEST_TCPIP_FORWARD) {
        handle_tcpip_forward(msg);
      } else {
        handle_cancel_forward(msg);
      }
      break;
    case SSH_GLOBAL_REQUEST_KEEPALIVE:
      // Once this callback is installed, client keepalives are ours to answer.
      ssh_message_global_request_reply_success(msg, 0);
      break;
    default:
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
  ctx_->stats->forwards_refused++;
  ctx_->log->warn("forward.refuse conn=s{} fp={} addr=\"{}\" port={} reason=\"{}\"", id_,
                  key_ ? key_->fingerprint : "-", printable(address), port, why);
  std::string notice =
      "snigate: cannot forward " + printable(address, 100) + ":" + std::to_string(port) + ": " + why;
  if (state_ == State::ready) {
    write_user(notice, true);
  } else {
    notices_.push_back(std::move(notice));
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
  if (forwards_.size() >= kMaxForwardsPerSession) {
    refuse_forward(msg, address, port, "too many forwards in one session");
    return;
  }
  const ForwardDecision decision = decide_forward(
      ForwardRequest{address, static_cast<std::uint32_t>(port)}, key_->options,
      ForwardPolicy{ctx_->domain, ctx_->advertise_port});
  if (!decision.ok) {
    refuse_forward(msg, address, port, decision.refusal);
    return;
  }
  if (ctx_->sessions->endpoints_of_key(key_->fingerprint) >= ctx_->max_endpoints_per_key) {
    refuse_forward(msg, address, port,
                   "this key already holds " + std::to_string(ctx_->max_endpoints_per_key) +
                       " endpoints (the limit): cancel one first");
    return;
  }
  const std::size_t key = next_forward_key_++;
  std::string name;
  if (decision.hostname) {
    name = decision.hostname->str();
    // A plain conflict is refused now, so ExitOnForwardFailure clients see it. Pooled or
    // same-key holders may still be joined or taken over once the command's options arrive.
    if (ctx_->registry->probe(name, key_->fingerprint) == tunnel::NameState::held) {
      refuse_forward(msg, address, port,
                     name + " is held by another key's session: pick another name (--takeover "
                            "only moves names between sessions of the same key)");
      return;
    }
  } else {
    for (int attempt = 0; attempt < 16 && name.empty(); ++attempt) {
      name = generate_label(random_u64()) + "." + ctx_->domain.str();
      if (ctx_->registry->probe(name, "") != tunnel::NameState::free) {
        name.clear();
      }
    }
    if (name.empty()) {
      refuse_forward(msg, address, port, "could not generate a free hostname, try again");
      return;
    }
  }
  Forward f;
  f.bind_address = address;
  f.bind_port = port == 0 ? decision.reply_port : static_cast<std::uint32_t>(port);
  f.requested_port = static_cast<std::uint32_t>(port);
  f.hostname = name;
  f.endpoint = std::make_shared<ForwardEndpoint>(weak_from_this(), key);
  if (state_ == State::ready) {
    // Added after the command (e.g. with ~C): claim now, with the session's options.
    if (const std::string refusal = claim(key, f); !refusal.empty()) {
      refuse_forward(msg, address, port, refusal);
      return;
    }
    write_user(banner_for(f), false);
  }
  ssh_message_global_request_reply_success(msg, static_cast<std::uint16_t>(f.bind_port));
  forwards_.emplace(key, std::move(f));
  ctx_->sessions->set_endpoints(id_, forwards_.size());
}

void Session::handle_cancel_forward(ssh_message msg) {
  const char* raw_address = ssh_message_global_request_address(msg);
  const std::string address = raw_address ? raw_address : "";
  const auto port = static_cast<std::uint32_t>(ssh_message_global_request_port(msg));
  for (auto it = forwards_.begin(); it != forwards_.end(); ++it) {
    if (it->second.bind_address == address && it->second.bind_port == port) {
      remove_forward(it, "cancel_forward");
      ssh_message_global_request_reply_success(msg, 0);
      return;
    }
  }
  ssh_message_reply_default(msg);
}

// ---- public connections ----------------------------------------------------------------

void Session::deliver(std::size_t forward_key, tunnel::IncomingConnection conn) {
  // Runs on the accepting thread: move the socket to this session's io_context.
  boost::system::error_code ec;
  const auto protocol = conn.client.protocol();
  const int fd = conn.socket.release(ec);
  if (ec) {
    return;
  }
  struct Moved {
    std::vector<std::byte> peeked;
    std::string server_name;
    boost::asio::ip::tcp::endpoint client;
    std::uint64_t id;
  };
  boost::asio::post(ioc_, [self = shared_from_this(), forward_key, fd, protocol,
                           m = Moved{std::move(conn.peeked), std::move(conn.server_name),
                                     conn.client, conn.id}]() mutable {
    boost::asio::ip::tcp::socket socket(self->ioc_);
    boost::system::error_code ec;
    socket.assign(protocol, fd, ec);
    if (ec) {
      ::close(fd);
      return;
    }
    self->start_bridge(forward_key, tunnel::IncomingConnection{std::move(socket),
                                                               std::move(m.peeked),
                                                               std::move(m.server_name),
                                                               m.client, m.id});
  });
}

void Session::start_bridge(std::size_t forward_key, tunnel::IncomingConnection conn) {
  const auto f = forwards_.find(forward_key);
  if (f == forwards_.end() || state_ == State::closing || state_ == State::closed) {
    // The endpoint went away between routing and now.
    tunnel::send_alert_and_close(conn.socket, gw::kAlertUnrecognizedName);
    return;
  }
  if (state_ != State::ready) {
    // Names are only claimed once ready, so this is a race with a session just ending.
    tunnel::send_alert_and_close(conn.socket, gw::kAlertUnrecognizedName);
    return;
  }
  if (std::string why; !access_.permits(conn.client.address(), &why)) {
    ctx_->stats->connections_cidr_denied++;
    refuse_routed(std::move(conn), f->second, "cidr_denied", std::nullopt, why);
    return;
  }
  if (f->second.open_connections >= ctx_->max_connections_per_endpoint) {
    ctx_->stats->connections_over_endpoint_limit++;
    refuse_routed(std::move(conn), f->second, "limit", gw::kAlertInternalError,
                  "this endpoint already has " + std::to_string(f->second.open_connections) +
                      " open connections (--max-connections-per-endpoint)");
    return;
  }
  ctx_->tunnel_log->debug("bridge.start conn=t{} s={} sni={}", conn.id, id_, conn.server_name);
  auto bridge = std::make_shared<Bridge>(*this, std::move(conn));
  bridges_.emplace(bridge->id(), bridge);
  ++f->second.open_connections;
  info_dirty_ = true;
  bridge->start(forward_key, f->second);
  if (!bridge->finished()) {
    queue_service(bridge);  // the open's answer arrives in a later pump
  }
  after_channel_write();
  request_pump();
}

std::unordered_map<std::size_t, Forward>::iterator Session::remove_forward(
    std::unordered_map<std::size_t, Forward>::iterator it, const std::string& reason) {
  const Forward& f = it->second;
  if (f.registration) {
    ctx_->log->info("endpoint.deleted conn=s{} url={} id={} reason=\"{}\"", id_, url_for(f), f.id,
                    reason);
    ctx_->events->emit(tunnel::EndpointDeleted{f.id, url_for(f), id_, reason,
                                               std::chrono::system_clock::now()});
  }
  auto next = forwards_.erase(it);
  ctx_->sessions->set_endpoints(id_, forwards_.size());
  info_dirty_ = true;
  return next;
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
  info.open_connections = bridges_.size();
  for (const auto& [key, f] : forwards_) {
    if (f.registration) {
      info.endpoints.push_back(EndpointInfo{f.id, url_for(f), f.pool, f.created_at,
                                            f.open_connections, f.bytes_in, f.bytes_out});
    }
  }
  std::lock_guard lock(info_mutex_);
  info_ = std::move(info);
}

void Session::tell_user_about_connection(const std::string& line) {
  constexpr int kMaxLinesPerSecond = 5;
  if (user_lines_this_second_ >= kMaxLinesPerSecond) {
    ++user_lines_dropped_;  // summarised by on_tick()
    return;
  }
  ++user_lines_this_second_;
  write_user(line, false);
}

void Session::refuse_routed(tunnel::IncomingConnection conn, const Forward& f,
                            const char* refusal, std::optional<std::uint8_t> alert,
                            const std::string& why) {
  const std::string ip = conn.client.address().to_string();
  ctx_->tunnel_log->warn("tunnel.refuse conn=t{} s={} sni={} client={} reason=\"{}\"", conn.id,
                         id_, conn.server_name, ip, why);
  tunnel::ConnectionClosed ev;
  ev.endpoint_id = f.id;
  ev.endpoint_url = url_for(f);
  ev.server_name = conn.server_name;
  ev.client_ip = ip;
  ev.client_port = conn.client.port();
  ev.start = std::chrono::system_clock::now();
  ev.bytes_in = conn.peeked.size();
  ev.close_reason = "refused";
  ev.refusal_reason = refusal;
  if (alert) {
    ev.bytes_out = gw::make_alert(*alert).size();
  }
  ev.key_fingerprint = key_ ? key_->fingerprint : "";
  ev.key_name = key_ ? key_->comment : "";
  ev.conn_id = conn.id;
  ev.session_id = id_;
  ctx_->events->emit(ev);
  if (alert) {
    tunnel::send_alert_and_close(conn.socket, *alert);
  } else {
    boost::system::error_code ec;
    conn.socket.close(ec);
  }
  tell_user_about_connection("snigate: connection from " + ip + " refused: " + why);
}

void Session::bridge_closed(const Bridge& b, const char* reason) {
  ++connections_total_;
  info_dirty_ = true;
  if (const auto f = forwards_.find(b.forward_key_); f != forwards_.end()) {
    --f->second.open_connections;
    f->second.bytes_in += b.bytes_up_;
    f->second.bytes_out += b.bytes_down_;
  }
  bytes_in_total_ += b.bytes_up_;
  bytes_out_total_ += b.bytes_down_;
  const auto now = std::chrono::steady_clock::now();
  const auto duration = now - b.started_;
  tunnel::ConnectionClosed ev;
  ev.endpoint_id = b.endpoint_id_;
  ev.endpoint_url = b.endpoint_url_;
  ev.server_name = b.conn_.server_name;
  ev.client_ip = b.conn_.client.address().to_string();
  ev.client_port = b.conn_.client.port();
  ev.start = std::chrono::system_clock::now() -
             std::chrono::duration_cast<std::chrono::system_clock::duration>(duration);
  ev.duration = duration;
  ev.bytes_in = b.bytes_up_;
  ev.bytes_out = b.bytes_down_;
  ev.close_reason = reason;
  ev.key_fingerprint = key_ ? key_->fingerprint : "";
  ev.key_name = key_ ? key_->comment : "";
  ev.conn_id = b.conn_.id;
  ev.session_id = id_;
  ctx_->events->emit(ev);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(duration).count();
  if (std::string_view(reason) == "upstream_refused") {
    tell_user_about_connection("snigate: connection from " + ev.client_ip + " to " +
                               ev.server_name +
                               " failed: your ssh client could not reach the -R target (is your "
                               "upstream running?)");
  } else if (command_ && command_->verbose) {
    tell_user_about_connection("snigate: " + ev.client_ip + ":" + std::to_string(ev.client_port) +
                               " " + ev.server_name + " " + std::to_string(ms) + "ms in=" +
                               std::to_string(ev.bytes_in) + " out=" +
                               std::to_string(ev.bytes_out) + " " + reason);
  }
}

void Session::drain() {
  boost::asio::post(ioc_, [self = shared_from_this()] {
    if (self->state_ == State::closing || self->state_ == State::closed) {
      return;
    }
    self->draining_ = true;
    self->write_user("snigate: the gateway is shutting down; open connections may finish", true);
    for (auto it = self->forwards_.begin(); it != self->forwards_.end();) {
      it = self->remove_forward(it, "shutdown");  // no new connections; open ones go on
    }
    self->close_reason_ = "shutdown";
    self->request_pump();  // after_pump() ends the session once its bridges are done
  });
}

// ---- key reload ------------------------------------------------------------------------

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
    write_user("snigate: your key was removed from authorized_keys; closing this session", true);
    close_reason_ = "key_revoked";
    exit_status_ = 1;
    begin_close();
    return;
  }
  if (std::string why; !keys::source_allowed(now->options, peer_address_, &why)) {
    ctx_->log->warn("session.revoked conn=s{} fp={} reason=\"from= no longer allows {}: {}\"",
                    id_, key_->fingerprint, peer_ip_, why);
    write_user("snigate: your key's from= in authorized_keys no longer allows " + peer_ip_ +
                   "; closing this session",
               true);
    close_reason_ = "key_revoked";
    exit_status_ = 1;
    begin_close();
    return;
  }
  key_ = *now;  // new options (permitlisten, expiry, ...) apply from now on
  for (auto it = forwards_.begin(); it != forwards_.end();) {
    const ForwardDecision d = decide_forward(
        ForwardRequest{it->second.bind_address, it->second.requested_port}, key_->options,
        ForwardPolicy{ctx_->domain, ctx_->advertise_port});
    if (d.ok) {
      ++it;
      continue;
    }
    write_user("snigate: " + url_for(it->second) + " removed: " + d.refusal, true);
    it = remove_forward(it, "key_no_longer_allows");
  }
}

// ---- closing ---------------------------------------------------------------------------

void Session::close_from_outside(std::string message) {
  boost::asio::post(ioc_, [self = shared_from_this(), message = std::move(message)] {
    self->write_user("snigate: session closed by the gateway admin" +
                         (message.empty() ? std::string() : ": " + message),
                     true);
    self->close_message_ = message;
    self->close_reason_ = "admin_close";
    self->begin_close();
    self->request_pump();
  });
}

void Session::teardown_endpoints() {
  for (auto it = forwards_.begin(); it != forwards_.end();) {
    it = remove_forward(it, "session_ended");  // vanish now, before the last bytes are flushed
  }
  auto bridges = bridges_;  // abort() reports back into bridges_
  for (auto& [id, b] : bridges) {
    b->abort("session_closed");
  }
}

void Session::begin_close() {
  if (state_ == State::closing || state_ == State::closed) {
    return;
  }
  set_state(State::closing);
  closing_since_ = Clock::now();
  teardown_endpoints();
  if (shell_ == nullptr || !ssh_channel_is_open(shell_)) {
    finish_close();  // `-N`: nothing left to show the user
    return;
  }
  // The client exits once it has the exit status and the channel close; it then
  // disconnects, which finish_close() sees (or kCloseLinger passes).
  ssh_channel_request_send_exit_status(shell_, exit_status_);
  ssh_channel_send_eof(shell_);
  ssh_channel_close(shell_);
  after_channel_write();
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
  if (session_ && ssh_is_connected(session_.get())) {
    ssh_disconnect(session_.get());
  }
  boost::system::error_code ec;
  fd_watch_.close(ec);
  tick_.cancel();
  ctx_->log->info("session.close conn=s{} peer={} reason=\"{}\"{}", id_, peer_, close_reason_,
                  was_open ? "" : " (before auth)");
}

}  // namespace gw::sshd

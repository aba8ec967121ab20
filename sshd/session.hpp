// One SSH client connection: key exchange, public-key auth, `tcpip-forward` endpoints, the
// `tls` command, and the bridges between routed public sockets and `forwarded-tcpip`
// channels. Everything here runs on the one io_context thread that owns the session: libssh
// forbids sharing a session between threads, so other threads only post to it.
//
// libssh is driven without blocking: Asio waits for the session fd, then pump() polls libssh
// until it has nothing more to do. libssh may run our callbacks re-entrantly from any
// libssh call, so callbacks only record state and move bytes; teardown happens in
// after_pump(), never inside a callback.
//
// Deliberately not here: authorisation rules (keys/, policy.*), routing (sni_router/).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "keys/authorized_keys.hpp"
#include "sshd/policy.hpp"
#include "sshd/server_context.hpp"
#include "sshd/ssh_handles.hpp"
#include "tunnel/cidr.hpp"
#include "tunnel/endpoint.hpp"
#include "tunnel/endpoint_registry.hpp"

namespace gw::sshd {

class Session;
class Bridge;

/// One `-R` forward: what the client asked for, and the name it holds in the registry.
struct Forward {
  std::string bind_address;  ///< exactly as the client sent it: channel opens must echo it
  std::uint32_t bind_port;   ///< as sent, or the port we replied for a port-0 request
  std::uint32_t requested_port;  ///< as sent (0 stays 0): what policy decisions see
  std::string hostname;      ///< normalised name held in the registry
  tunnel::Registration registration;  ///< empty until claimed (when the session is ready)
  std::shared_ptr<tunnel::TunnelEndpoint> endpoint;
  std::string id;  ///< "ep_<n>", for the API and events
  std::chrono::system_clock::time_point created_at;
  bool pool = false;
  std::uint64_t open_connections = 0;
  std::uint64_t bytes_in = 0;  ///< over finished connections
  std::uint64_t bytes_out = 0;
};

/// What the admin API shows of a session; a copy, safe to read from any thread.
struct EndpointInfo {
  std::string id, url;
  bool pool = false;
  std::chrono::system_clock::time_point created_at;
  std::uint64_t open_connections = 0, bytes_in = 0, bytes_out = 0;
};
struct SessionInfo {
  std::uint64_t id = 0;
  std::string peer, user, key_fingerprint, key_name, state;
  std::chrono::system_clock::time_point started_at;
  std::uint64_t open_connections = 0;
  std::vector<EndpointInfo> endpoints;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  enum class State { key_exchange, authenticating, authenticated, ready, closing, closed };

  Session(boost::asio::io_context& ioc, std::shared_ptr<const ServerContext> ctx,
          std::uint64_t id);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Takes ownership of the accepted socket `fd` and starts key exchange. Call on the
  /// session's own thread. `bind_mutex` serialises ssh_bind_accept_fd across threads.
  /// `slot` counts the connection as unauthenticated until it authenticates or closes.
  void start(ssh_bind bind, std::mutex& bind_mutex, int fd,
             const boost::asio::ip::tcp::endpoint& peer, StartupSlot slot);

  /// Thread-safe: a routed public connection for one of this session's forwards.
  void deliver(std::size_t forward_key, tunnel::IncomingConnection conn);

  /// Thread-safe: the admin ends the session; `message` (may be empty) is shown to the user
  /// and recorded in the session_ended event.
  void close_from_outside(std::string message);

  /// Thread-safe: the gateway is shutting down. Endpoints stop taking connections at once;
  /// the session ends when its open connections have finished.
  void drain();

  /// Thread-safe: the forward `key` was taken over by a session of the same key.
  void forward_displaced(std::size_t key);

  /// Thread-safe: authorized_keys changed. A session whose key is gone or expired is closed
  /// with a message; forwards the key may no longer hold are removed.
  void keys_changed(std::shared_ptr<const keys::KeyStore> store);

  /// Thread-safe: the latest published snapshot (refreshed after each pump that changed it).
  SessionInfo info() const {
    std::lock_guard lock(info_mutex_);
    return info_;
  }

  boost::asio::io_context& io_context() { return ioc_; }
  std::uint64_t id() const { return id_; }

  // libssh callbacks, called only through the trampolines in the .cpp; they record and
  // buffer, nothing more (libssh may call them re-entrantly from any libssh call).
  int on_auth_pubkey(const char* user, ssh_key key, char signature_state);
  ssh_channel on_session_channel_open();
  void on_global_request(ssh_message msg);
  int on_exec(const char* command);
  int on_shell();
  void on_session_channel_data(const void* data, std::uint32_t len);
  void on_session_channel_eof_or_close();

 private:
  friend class Bridge;

  void handle_tcpip_forward(ssh_message msg);
  void handle_cancel_forward(ssh_message msg);

  // The event loop.
  void pump();
  void after_pump();
  void arm_waits();
  void request_pump();
  void on_tick();

  // Session lifecycle.
  void set_state(State next);
  void become_ready();
  void refuse_session(const std::string& why);
  /// Every way a forward ends goes through here: log, event, per-key count.
  std::unordered_map<std::size_t, Forward>::iterator remove_forward(
      std::unordered_map<std::size_t, Forward>::iterator it, const std::string& reason);
  /// One line in the user's terminal about a public connection (refusals always; finished
  /// connections with --verbose), at most a few a second so a flood can't flood the user.
  void tell_user_about_connection(const std::string& line);
  void bridge_closed(const Bridge& bridge, const char* reason);
  /// Closes a routed connection before any channel opens (the upstream never sees it): logs,
  /// emits the event with `refusal` as its reason, tells the user's terminal. `alert`: sent
  /// first, when the client deserves a TLS answer.
  void refuse_routed(tunnel::IncomingConnection conn, const Forward& f, const char* refusal,
                     std::optional<std::uint8_t> alert, const std::string& why);
  void publish_info();
  /// Claims f's name with the command's options; returns the refusal, or "" when claimed.
  std::string claim(std::size_t key, Forward& f);
  void run_command();
  void apply_keys(const keys::KeyStore& store);
  void begin_close();
  void finish_close();
  void teardown_endpoints();
  void refuse_forward(ssh_message msg, const std::string& address, int port,
                      const std::string& why);
  void write_user(std::string_view text, bool to_stderr);
  std::string url_for(const Forward& f) const;
  std::string banner_for(const Forward& f) const;

  // Connections (called by Bridge on this thread).
  void start_bridge(std::size_t forward_key, tunnel::IncomingConnection conn);
  void queue_service(std::shared_ptr<Bridge> bridge);
  /// A forwarded-tcpip open still in flight when its public connection ended (the client left,
  /// or the open timed out). Freeing it now would leak the ssh client's upstream connection
  /// (LIBSSH-NOTES #2), so the session asks again after each pump, with the same arguments,
  /// until the answer: then it closes the channel (opened) or frees it (denied).
  struct PendingOpen {
    ssh_channel channel;
    std::string address;
    int port;
    std::string origin;
    int origin_port;
  };
  void adopt_open(PendingOpen open) { abandoned_opens_.push_back(std::move(open)); }
  void settle_abandoned_opens();
  void bridge_finished(std::uint64_t conn_id);
  /// After a libssh write outside pump(): libssh may only have queued the bytes.
  void after_channel_write();
  /// True while libssh holds output the socket hasn't taken: readers pause (libssh's
  /// output buffer is unbounded otherwise).
  bool output_congested() const;

  boost::asio::io_context& ioc_;
  std::shared_ptr<const ServerContext> ctx_;
  const std::uint64_t id_;
  std::string peer_;  ///< "ip:port", for logs
  boost::asio::ip::address peer_address_;
  std::string peer_ip_;
  std::uint16_t peer_port_ = 0;
  std::string user_;
  State state_ = State::key_exchange;
  StartupSlot startup_;  ///< held while key_exchange or authenticating

  // libssh handles: session_ first, so the channels (owned by it) are freed before it.
  SshSessionPtr session_;
  SshEventPtr event_;
  ssh_server_callbacks_struct server_cb_{};
  ssh_callbacks_struct session_cb_{};
  ssh_channel_callbacks_struct shell_cb_{};
  ssh_channel shell_ = nullptr;  ///< the session channel, owned by session_
  boost::asio::posix::stream_descriptor fd_watch_;  ///< a dup of libssh's fd, for waiting
  bool read_armed_ = false;
  bool write_armed_ = false;
  bool pump_posted_ = false;
  boost::asio::steady_timer tick_;

  std::optional<keys::AuthorizedKey> key_;
  std::optional<TlsCommand> command_;
  tunnel::AccessRule access_;  ///< from the command's --allow-cidr/--deny-cidr
  bool command_seen_ = false;
  std::string pending_command_;
  bool command_pending_ = false;
  std::vector<std::string> notices_;  ///< refusals to show once the session channel exists
  std::chrono::steady_clock::time_point started_at_;
  std::chrono::steady_clock::time_point authenticated_at_;
  std::chrono::steady_clock::time_point last_peer_data_;
  std::chrono::steady_clock::time_point last_keepalive_sent_;
  std::chrono::steady_clock::time_point closing_since_;
  std::string close_reason_;
  std::string close_message_;  ///< the admin's words, for the session_ended event
  int exit_status_ = 0;
  int auth_failures_ = 0;
  bool user_quit_ = false;
  std::string over_limit_;
  std::uint64_t connections_total_ = 0;
  std::uint64_t bytes_in_total_ = 0;
  std::uint64_t bytes_out_total_ = 0;
  int user_lines_this_second_ = 0;
  PerSecondBudget forward_requests_;  ///< tcpip-forward + cancel requests
  int user_lines_dropped_ = 0;
  std::chrono::system_clock::time_point started_wall_ = std::chrono::system_clock::now();
  bool info_dirty_ = true;
  mutable std::mutex info_mutex_;
  SessionInfo info_;  ///< guarded by info_mutex_: the one thing other threads read
  bool draining_ = false;  ///< set at auth when the key is over its session limit

  std::unordered_map<std::size_t, Forward> forwards_;
  std::size_t next_forward_key_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<Bridge>> bridges_;
  std::vector<std::uint64_t> finished_bridges_;
  std::vector<PendingOpen> abandoned_opens_;  ///< see adopt_open()
  std::vector<std::shared_ptr<Bridge>> service_queue_;  ///< need work after the pump
};

}  // namespace gw::sshd

// One SSH client connection: its event loop and lifecycle (key exchange, auth, ready, closing),
// and what ties the parts together. The parts live in their own files:
//   auth.*               the authentication decision (pure)
//   user_channel.*       the session channel: the `tls` command and every message to the user
//   forwards.*           the `-R` forwards and the names they hold
//   forwarded_channel.*  a forwarded-tcpip channel as a tunnel::Channel (libssh's sharp edges)
//   tunnel/bridge.*      the byte pump between a public socket and a channel
// Everything here runs on the one io_context thread that owns the session: libssh forbids
// sharing a session between threads, so other threads only post to it (SessionHandle).
//
// libssh is driven without blocking: Asio waits for the session fd, then pump() polls libssh
// until it has nothing more to do. libssh may run callbacks re-entrantly from any libssh call,
// so callbacks only record state and move bytes; what they record is acted on in after_pump(),
// never inside a callback.
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

#include "common/cidr.hpp"
#include "keys/authorized_keys.hpp"
#include "sshd/direct_channel.hpp"
#include "sshd/forwarded_channel.hpp"
#include "sshd/forwards.hpp"
#include "sshd/policy.hpp"
#include "sshd/server_context.hpp"
#include "sshd/session_handle.hpp"
#include "sshd/ssh_handles.hpp"
#include "sshd/user_channel.hpp"
#include "tunnel/bridge.hpp"
#include "tunnel/endpoint.hpp"

namespace gw::sshd {

class Session final : public SessionHandle,
                      public ChannelHost,
                      public std::enable_shared_from_this<Session> {
 public:
  enum class State { key_exchange, authenticating, authenticated, ready, closing, closed };

  Session(boost::asio::io_context& ioc, std::shared_ptr<const ServerContext> ctx, std::uint64_t id);
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Takes ownership of the accepted socket `fd` and starts key exchange. Call on the
  /// session's own thread. `bind_mutex` serialises ssh_bind_accept_fd across threads.
  /// `slot` counts the connection as unauthenticated until it authenticates or closes.
  void start(ssh_bind bind, std::mutex& bind_mutex, int fd,
             const boost::asio::ip::tcp::endpoint& peer, StartupTable::Slot slot);

  /// Thread-safe: a routed public connection for one of this session's forwards.
  void deliver(std::size_t forward_key, tunnel::IncomingConnection conn);
  /// Thread-safe: the forward `key` was taken over by a session of the same key.
  void forward_displaced(std::size_t key);

  // SessionHandle (thread-safe)
  SessionInfo info() const override {
    std::lock_guard lock(info_mutex_);
    return info_;
  }
  void close_from_outside(std::string message) override;
  void drain() override;
  void keys_changed(std::shared_ptr<const keys::KeyStore> store) override;
  void evict() override;

  std::uint64_t id() const { return id_; }

  // libssh callbacks, called only through the trampolines in the .cpp; they record and answer,
  // nothing more (libssh may call them re-entrantly from any libssh call).
  int on_auth_pubkey(const char* user, ssh_key key, char signature_state);
  ssh_channel on_session_channel_open();
  /// An authentication request of any other method ("none", password, ...): refused, counted.
  int on_auth_other(const char* method);
  void on_global_request(ssh_message msg);
  /// A direct-tcpip open (ssh -L / -W to an internal endpoint): decided and answered now.
  void on_direct_tcpip(ssh_message msg);
  /// ChannelHost: public, as libssh's message callback (a trampoline) counts requests too.
  bool request_allowed() override;

 private:
  // ChannelHost (this thread)
  void after_channel_write() override;
  bool output_congested() const override;
  void queue_service(std::weak_ptr<ForwardedChannel> channel) override;
  void adopt(std::shared_ptr<ForwardedChannel> channel) override;
  void request_pump() override;
  bool input_processed() const override { return input_processed_; }
  void count_open_in_flight(int delta) override;
  void channel_violation(const char* what) override;
  void note_data_packet() override { ++data_packets_; }
  void note_data_sent(std::size_t n) override { data_sent_earning_ += n; }

  void handle_tcpip_forward(ssh_message msg);
  void handle_cancel_forward(ssh_message msg);
  /// Counts a refused authentication attempt toward the per-connection limit.
  int count_auth_failure();
  void refuse_forward(ssh_message msg, const std::string& address, int port,
                      const std::string& why);

  // The event loop.
  void pump();
  void after_pump();
  void arm_waits();
  void on_tick();
  /// Adds a turn's messages without data to this second's count; over the budget, pauses the
  /// session's input until the second is over.
  void charge_control_messages(std::uint64_t n, std::chrono::steady_clock::time_point now);
  void arm_resume();

  // Lifecycle.
  void set_state(State next);
  void run_command(const std::string& command_line);
  void become_ready();
  /// Claims every forward not yet claimed (at ready, then while some wait for a name their
  /// key's other session holds); tells the user what was refused.
  void claim_forwards();
  ClaimOptions claim_options() const;
  /// Cluster mode: after the local claim, asks the cluster registry too; the banner (or the
  /// refusal) follows in gate_decided(). False on a single node (nothing to wait for).
  bool gate_claim(std::size_t key, Forward& f);
  void gate_decided(std::size_t key, const tunnel::GateAnswer& answer);
  /// Ends one forward, telling the user `why` after its URL (taken over, or lost in the
  /// cluster); ends the session when it was the last.
  void end_forward(std::size_t key, const std::string& why, bool taken_over);
  /// Ends the session: it has no endpoint left and none to wait for.
  void end_if_nothing_served();
  /// Ends the session with `why` shown to the user; `reason` goes to session_ended.
  void refuse_session(const std::string& why, const char* reason);
  void apply_keys(const keys::KeyStore& store);
  void begin_close();
  void finish_close();
  void teardown_endpoints();
  /// Ends the open connections of one forward (or all): they finish through bridge_closed().
  void abort_connections(const char* reason, std::optional<std::size_t> forward_key);
  void publish_info();

  // Public connections.
  void start_bridge(std::size_t forward_key, tunnel::IncomingConnection conn);
  /// Closes a routed connection before any channel opens (the upstream never sees it): logs,
  /// emits the event with `refusal` as its reason, tells the user's terminal. `alert`: sent
  /// first, when the client deserves a TLS answer.
  void refuse_routed(tunnel::IncomingConnection conn, const Forward& f, const char* refusal,
                     std::optional<std::uint8_t> alert, const std::string& why);
  void bridge_closed(std::size_t forward_key, const tunnel::ConnectionClosed& ev);
  /// While an endpoint's or the key's BufferBudget is over: closes this session's connections
  /// whose public clients stopped reading, longest stalled first, until it holds. True when
  /// some budget was over.
  bool enforce_buffer_budgets();
  tunnel::EndpointLabel label_for(const Forward& f) const;

  boost::asio::io_context& ioc_;
  std::shared_ptr<const ServerContext> ctx_;
  const std::uint64_t id_;
  std::string peer_;  ///< "ip:port", for logs
  boost::asio::ip::address peer_address_;
  std::string peer_ip_;
  std::uint16_t peer_port_ = 0;
  std::string user_;
  State state_ = State::key_exchange;
  StartupTable::Slot startup_;  ///< held while key_exchange or authenticating

  /// libssh counts the packets it reads here (ssh_set_counters): declared before session_,
  /// which points at it, so it outlives it.
  ssh_counter_struct packets_{};
  std::uint64_t data_packets_ = 0;  ///< channel data packets among them (note_data_packet)
  std::chrono::steady_clock::time_point control_window_start_;
  std::uint64_t control_messages_ = 0;   ///< this second's messages without data
  std::uint64_t control_earned_ = 0;     ///< this second's allowance earned by channel opens
  std::uint64_t data_sent_earning_ = 0;  ///< channel data bytes sent to the client this second
  std::chrono::steady_clock::time_point paused_until_;  ///< input not read before this
  // libssh handles: session_ first, so the channels (owned by it) are freed before it.
  SshSessionPtr session_;
  SshEventPtr event_;
  ssh_server_callbacks_struct server_cb_{};
  ssh_callbacks_struct session_cb_{};
  boost::asio::posix::stream_descriptor fd_watch_;  ///< a dup of libssh's fd, for waiting
  bool read_armed_ = false;
  bool write_armed_ = false;
  bool pump_posted_ = false;
  boost::asio::steady_timer tick_;
  boost::asio::steady_timer resume_;  ///< ends a pause (charge_control_messages)

  UserChannel terminal_;  ///< the user's terminal (the session channel), if any
  ForwardTable forwards_;
  std::optional<keys::AuthorizedKey> key_;
  std::shared_ptr<tunnel::BufferBudget> key_budget_;  ///< shared by the key's sessions
  std::optional<TlsCommand> command_;
  gw::AccessRule access_;  ///< from the command's --allow-cidr/--deny-cidr
  tunnel::BridgeConfig bridge_config_;
  std::chrono::steady_clock::time_point started_at_;
  std::chrono::steady_clock::time_point authenticated_at_;
  std::chrono::steady_clock::time_point last_peer_data_;
  std::chrono::steady_clock::time_point last_keepalive_sent_;
  std::chrono::steady_clock::time_point closing_since_;
  std::string close_reason_;
  std::string close_message_;  ///< the admin's words, for the session_ended event
  int exit_status_ = 0;
  int auth_failures_ = 0;
  bool free_none_used_ = false;  ///< the client's first "none" request does not count
  std::string over_limit_;
  std::uint64_t connections_total_ = 0;
  std::uint64_t bytes_in_total_ = 0;
  std::uint64_t bytes_out_total_ = 0;
  PerSecondBudget forward_requests_;  ///< tcpip-forward + cancel requests
  PerSecondBudget requests_;          ///< channel and global requests (request_allowed)
  std::chrono::system_clock::time_point started_wall_ = std::chrono::system_clock::now();
  bool info_dirty_ = true;
  mutable std::mutex info_mutex_;
  SessionInfo info_;  ///< guarded by info_mutex_: the one thing other threads read
  bool draining_ = false;
  bool asked_for_forwards_ = false;  ///< any -R was asked for (for the closing message)
  bool told_no_forwards_ = false;    ///< a session without -R was told it serves nothing
  bool servicing_ = false;           ///< inside after_pump()'s channel service loop
  bool input_processed_ = false;     ///< during after_pump(), after a pump that read input
  int opens_in_flight_ = 0;          ///< forwarded-tcpip opens the client has not answered
  /// Since when the client has answered no open while some were in flight.
  std::chrono::steady_clock::time_point unanswered_since_;

  struct BridgeEntry {
    std::shared_ptr<tunnel::Bridge> bridge;
    std::size_t forward_key;  ///< the forward it was routed to
  };
  std::unordered_map<std::uint64_t, BridgeEntry> bridges_;
  std::vector<std::uint64_t> finished_bridges_;  ///< erased after the pump, never inside one
  std::vector<std::weak_ptr<ForwardedChannel>> service_queue_;
  std::vector<std::shared_ptr<ForwardedChannel>> adopted_;  ///< see ChannelHost::adopt
  DirectChannels direct_;  ///< this session's ssh -L / -W channels to internal endpoints
};

}  // namespace gw::sshd

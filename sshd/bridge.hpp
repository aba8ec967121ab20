// Bridge: one routed public TCP connection piped to one `forwarded-tcpip` channel.
//
// Two one-way pipes, each with its own state:
//   up   (public -> channel): read the socket only while the channel window and the
//        session's output can take it; FIN becomes channel EOF once pending bytes are sent.
//   down (channel -> public): the data callback writes straight to the socket; what the
//        socket won't take waits in a capped buffer, beyond which libssh keeps the bytes
//        and withholds the window (real back-pressure). Channel EOF becomes shutdown(send).
// Memory per connection is bounded by kDownBufferCap plus libssh's window, whatever the
// peers do, and an idle connection holds no transfer buffer at all (reads go through a
// per-thread scratch buffer).
//
// Runs only on its session's thread. Deliberately no retries: a channel the client refuses
// gets a TLS internal_error alert and the connection ends.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sshd/ssh_handles.hpp"
#include "tunnel/endpoint.hpp"

namespace gw::sshd {

class Session;
struct Forward;

class Bridge : public std::enable_shared_from_this<Bridge> {
 public:
  enum class ChannelState { opening, open, failed, freed };
  enum class UpState { open, eof_pending, eof_sent, closed };
  enum class DownState { open, eof_pending, shutdown_sent, closed };

  Bridge(Session& session, tunnel::IncomingConnection conn);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  /// Opens the channel for `forward`; the result arrives through service().
  void start(std::size_t forward_key, const Forward& forward);
  /// Called by the session after each pump: completes opens, retries blocked writes,
  /// handles EOF/close recorded by callbacks. Never called from inside a callback.
  void service();
  /// Ends the connection now (session closing, idle timeout).
  void abort(const char* reason);
  /// From the session's timer: the channel-open deadline, then the idle timeout each way.
  void check_deadlines(std::chrono::steady_clock::time_point now, std::chrono::seconds idle);

  std::uint64_t id() const { return conn_.id; }
  bool finished() const { return finished_; }

 private:
  static int on_data_cb(ssh_session, ssh_channel, void* data, std::uint32_t len, int is_stderr,
                        void* self);
  static void on_eof_cb(ssh_session, ssh_channel, void* self);
  static void on_close_cb(ssh_session, ssh_channel, void* self);

  int on_data(const std::byte* data, std::size_t len);
  void on_opened();
  void on_open_refused();
  void grow_window();
  void pull_up();
  bool push_up_pending();
  void send_up_eof();
  void flush_down();
  void arm_read();
  void arm_write();
  void maybe_finish();
  void finish(const char* reason);
  void set_up(UpState next);
  void set_down(DownState next);
  void set_channel(ChannelState next);

  Session& session_;
  tunnel::IncomingConnection conn_;
  ssh_channel channel_ = nullptr;  ///< owned by the session; freed in finish()
  ssh_channel_callbacks_struct callbacks_{};
  ChannelState channel_state_ = ChannelState::opening;
  UpState up_ = UpState::open;
  DownState down_ = DownState::open;
  std::size_t forward_key_ = 0;
  std::string endpoint_id_;
  std::string endpoint_url_;
  std::string open_address_;
  std::uint32_t open_port_ = 0;

  std::vector<std::byte> up_pending_;    ///< read (or peeked) but not yet taken by the channel
  std::vector<std::byte> down_pending_;  ///< from the channel, not yet taken by the socket
  bool libssh_holds_down_data_ = false;  ///< on_data returned less than offered
  bool growing_window_ = false;          ///< inside grow_window(): on_data takes everything
  std::uint64_t received_since_grow_ = 0;
  bool peer_closed_channel_ = false;
  bool read_armed_ = false;
  bool write_armed_ = false;
  bool finished_ = false;
  bool counted_active_ = false;
  bool service_queued_ = false;

  std::uint64_t bytes_up_ = 0;
  std::uint64_t bytes_down_ = 0;
  // The gateway-wide counters move with the bytes, not at close, so /metrics rates stay true
  // for long-lived connections.
  void count_up(std::uint64_t n);
  void count_down(std::uint64_t n);
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point open_sent_;
  std::chrono::steady_clock::time_point last_up_;
  std::chrono::steady_clock::time_point last_down_;

  friend class Session;
};

}  // namespace gw::sshd

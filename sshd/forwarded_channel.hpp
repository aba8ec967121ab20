// ForwardedChannel: a `forwarded-tcpip` channel to the ssh client, as a tunnel::Channel (or a
// `direct-tcpip` channel the client opened and we accepted: the same data path, only without
// the open; one class, so the sharp edges below are handled once). All of
// libssh 0.10's sharp edges on the data path live here (shared/LIBSSH-NOTES.md):
//   - the open is polled: ssh_channel_open_reverse_forward answers SSH_AGAIN until the client
//     replies, and only the same call with the same arguments collects the answer;
//   - an open still in flight when the bridge lets go is adopted by the host and waited for,
//     then closed: freeing it earlier leaks the client's upstream connection (#2);
//   - only an OPEN channel is closed; a denied one is only freed (#1);
//   - no "window reopened" callback (#6): a writer waiting for room is retried after each pump;
//   - libssh's window growth is too slow for long paths (#5): we keep kChannelWindow open,
//     except while the endpoint's or key's BufferBudget is over (then libssh's own 1.28 MB);
//   - what libssh keeps for a handler with no room counts against those budgets too;
//   - the data callback may run re-entrantly from any libssh call: it hands bytes to the
//     handler (which only consumes), and EOF/close are recorded and reported from service(),
//     which the host calls after each pump, outside every callback.
// Deliberately not here: the byte pump and its buffers (tunnel/bridge.*), the session's
// event loop (session.*), which only calls service() and settle().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sshd/ssh_handles.hpp"
#include "tunnel/buffer_budget.hpp"
#include "tunnel/channel.hpp"

namespace gw::sshd {

class ForwardedChannel;

/// What a ForwardedChannel needs of the session that owns its ssh_session (same thread).
class ChannelHost {
 public:
  virtual ~ChannelHost() = default;
  /// After a libssh write outside the pump: libssh may only have queued the bytes.
  virtual void after_channel_write() = 0;
  /// Run the pump (and so service()/settle()) again soon, from a posted handler.
  virtual void request_pump() = 0;
  /// True while libssh holds output the socket hasn't taken (its buffer is unbounded).
  virtual bool output_congested() const = 0;
  /// Call channel.service() after the next pump.
  virtual void queue_service(std::weak_ptr<ForwardedChannel> channel) = 0;
  /// The bridge let go: keep `channel` and call settle() after each pump until it says done.
  virtual void adopt(std::shared_ptr<ForwardedChannel> channel) = 0;
  /// True while after_pump() follows a pump that processed input: only then can an open have
  /// been answered, so only then are pending opens polled (each poll is a syscall: a client
  /// that answers none must not make every pump cost one per open in flight).
  virtual bool input_processed() const = 0;
  /// An open was sent (+1) or answered, or given up with the session (-1).
  virtual void count_open_in_flight(int delta) = 0;
  /// The client broke a channel's rules: counted and logged by the session.
  virtual void channel_violation(const char* what) = 0;
  /// A channel data packet arrived from the client (called from the data callback): what the
  /// session's per-turn and per-second budgets for control messages leave out.
  virtual void note_data_packet() = 0;
  /// `n` bytes of channel data were sent to the client: its window adjusts for them are
  /// earned, not taken from the session's budget.
  virtual void note_data_sent(std::size_t n) = 0;
  /// A channel request (pty-req, env, window-change, ...) arrived: false when the session has
  /// spent its budget of requests for this second, and the request is refused (counted).
  virtual bool request_allowed() = 0;
};

class ForwardedChannel final : public tunnel::Channel,
                               public std::enable_shared_from_this<ForwardedChannel> {
 public:
  /// `address`/`port`: exactly what the client's tcpip-forward named (OpenSSH matches the
  /// channel to its forward by them); `origin`: the public client, for the user's logs;
  /// `budgets`: where the bytes it holds for the handler are counted.
  ForwardedChannel(ChannelHost& host, ssh_session session, std::string address, std::uint32_t port,
                   std::string origin, std::uint16_t origin_port,
                   tunnel::BufferBudgets budgets = {});
  /// A channel the client opened and we already accepted (direct-tcpip, ssh -L / -W): start()
  /// only binds the handler and reports the open from service(). `accepted` is owned by
  /// `session`, as any channel; `budgets` as above.
  ForwardedChannel(ChannelHost& host, ssh_session session, ssh_channel accepted,
                   tunnel::BufferBudgets budgets = {});
  ~ForwardedChannel() override;
  ForwardedChannel(const ForwardedChannel&) = delete;
  ForwardedChannel& operator=(const ForwardedChannel&) = delete;

  // tunnel::Channel
  void start(tunnel::ChannelHandler& handler) override;
  std::optional<std::size_t> write(std::span<const std::byte> data) override;
  bool blocked() const override;
  void want_writable() override;
  void resume_reading() override;
  bool send_eof() override;
  void close() override;

  /// From the host after each pump: collects the open's answer, reports EOF/close recorded by
  /// callbacks, wakes a waiting writer, grows the window.
  void service();
  /// From the host after each pump, once adopted: true when the channel is gone for good.
  bool settle();
  /// The session is being freed (ssh_free frees its channels): forget the handle.
  void detach();

 private:
  enum class State { idle, opening, open, failed };
  static int on_data_cb(ssh_session, ssh_channel, void* data, std::uint32_t len, int is_stderr,
                        void* self);
  static void on_eof_cb(ssh_session, ssh_channel, void* self);
  static void on_close_cb(ssh_session, ssh_channel, void* self);
  int poll_open();
  /// Polls the open unless nothing can have answered it; on an answer, records the state.
  /// Returns false while still waiting.
  bool collect_open();
  void set_answered(int rc);
  void violation(const char* what);
  /// True (and recorded as a violation) when the client's window adjusts overflowed the window.
  bool window_overflowed();
  std::size_t deliver(std::span<const std::byte> data);
  void grow_window();
  void queue();
  /// After libssh's buffer or held_ changed: what we hold, to the budgets.
  void update_held() { held_bytes_.set(libssh_held_ + held_.size()); }

  ChannelHost& host_;
  ssh_session session_;            ///< borrowed: owned by the Session, outlives us or detach()es us
  ssh_channel channel_ = nullptr;  ///< owned by session_; freed in settle()
  ssh_channel_callbacks_struct callbacks_{};
  std::string address_;
  std::uint32_t port_;
  std::string origin_;
  std::uint16_t origin_port_;
  tunnel::ChannelHandler* handler_ = nullptr;  ///< null before start and once released
  State state_ = State::idle;
  bool opened_reported_ = false;
  bool eof_seen_ = false, eof_reported_ = false;
  bool close_seen_ = false, close_reported_ = false;
  bool want_writable_ = false;
  bool queued_ = false;             ///< in the host's service queue
  bool libssh_holds_data_ = false;  ///< the handler took less than libssh offered
  std::vector<std::byte> held_;     ///< taken out of libssh by a window growth, not yet delivered
  std::size_t libssh_held_ = 0;     ///< what libssh kept when the handler last took less
  tunnel::HeldBytes held_bytes_;    ///< libssh_held_ + held_, to the endpoint's and key's budgets
  std::uint64_t received_since_grow_ = 0;
  std::uint32_t window_after_write_ = 0;  ///< the remote window as our last write left it
  const char* violated_ = nullptr;        ///< set by a callback: reported from service()
};

}  // namespace gw::sshd

// The session channel of an SSH connection: the user's terminal. It takes the one exec/shell
// request (the `tls [options]` command), notices Ctrl-C/Ctrl-D and EOF as "I'm done", and is
// where every message to the user goes (banners, refusals, --verbose lines), with connection
// lines thinned so a flood of visitors can't flood the terminal. `ssh -N` has none: then
// messages are dropped (the log has them).
//
// Runs on the session's thread; the libssh callbacks only record (the session acts after its
// pump). Deliberately not here: what the command means (policy.*, session.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/per_second_budget.hpp"
#include "sshd/forwarded_channel.hpp"
#include "sshd/ssh_handles.hpp"

namespace gw::sshd {

class UserChannel {
 public:
  explicit UserChannel(ChannelHost& host) : host_(host) {}
  UserChannel(const UserChannel&) = delete;
  UserChannel& operator=(const UserChannel&) = delete;

  /// The client asks for a session channel: the one we give, or null (a second one).
  ssh_channel open(ssh_session session);
  /// Whether the client opened one (false for `ssh -N`).
  bool exists() const { return channel_ != nullptr; }
  bool is_open() const;

  /// The command once it has arrived (exactly once); "" for a shell request.
  std::optional<std::string> take_command();
  /// True once after the user pressed Ctrl-C/Ctrl-D or closed the channel.
  bool take_quit();

  /// One message line (CRLF ends, so it reads right with and without a pty). Dropped when there
  /// is no open session channel (`ssh -N`); see notice() for lines from before the command.
  void write(std::string_view text, bool to_stderr);
  /// A message from before the command arrived (e.g. a forward refused at login).
  void notice(std::string text) { notices_.push_back(std::move(text)); }
  void flush_notices();
  /// A line about one public connection: at most a few a second; the next line shown (or
  /// summary()) says how many were left out.
  void connection_line(const std::string& line);
  /// Once a second: says how many connection lines were left out, if any.
  void summary();
  /// Ends the user's command: exit status, EOF and close. The client then disconnects.
  void end(int exit_status);

  /// The session is being freed (ssh_free frees the channel): forget the handle.
  void detach() { channel_ = nullptr; }

 private:
  static int on_exec(ssh_session, ssh_channel, const char* command, void* self);
  static int on_pty(ssh_session, ssh_channel, const char* term, int, int, int, int, void* self);
  static int on_pty_resize(ssh_session, ssh_channel, int, int, int, int, void* self);
  static int on_shell(ssh_session, ssh_channel, void* self);
  static int on_data(ssh_session, ssh_channel, void* data, std::uint32_t len, int, void* self);
  static void on_close(ssh_session, ssh_channel, void* self);

  ChannelHost& host_;
  ssh_channel channel_ = nullptr;  ///< owned by the ssh_session
  ssh_channel_callbacks_struct callbacks_{};
  bool command_seen_ = false;
  std::optional<std::string> command_;
  bool quit_ = false;
  std::vector<std::string> notices_;
  PerSecondBudget connection_lines_{5};
};

}  // namespace gw::sshd

#include "sshd/user_channel.hpp"

#include <libssh/callbacks.h>

namespace gw::sshd {

int UserChannel::on_pty(ssh_session, ssh_channel, const char*, int, int, int, int, void* self) {
  // Accepted (and ignored), so interactive users get no "PTY allocation failed" warning; within
  // the session's request budget, like every request a client can repeat at will.
  return static_cast<UserChannel*>(self)->host_.request_allowed() ? 0 : -1;
}

int UserChannel::on_pty_resize(ssh_session, ssh_channel, int, int, int, int, void* self) {
  return static_cast<UserChannel*>(self)->host_.request_allowed() ? 0 : -1;
}

ssh_channel UserChannel::open(ssh_session session) {
  if (channel_ != nullptr) {
    return nullptr;  // one session channel per connection
  }
  channel_ = ssh_channel_new(session);
  if (channel_ == nullptr) {
    return nullptr;
  }
  callbacks_.userdata = this;
  callbacks_.channel_exec_request_function = &UserChannel::on_exec;
  callbacks_.channel_shell_request_function = &UserChannel::on_shell;
  callbacks_.channel_pty_request_function = &UserChannel::on_pty;
  callbacks_.channel_pty_window_change_function = &UserChannel::on_pty_resize;
  callbacks_.channel_data_function = &UserChannel::on_data;
  callbacks_.channel_close_function = &UserChannel::on_close;
  ssh_callbacks_init(&callbacks_);
  ssh_set_channel_callbacks(channel_, &callbacks_);
  return channel_;
}

bool UserChannel::is_open() const { return channel_ != nullptr && ssh_channel_is_open(channel_); }

std::optional<std::string> UserChannel::take_command() {
  return std::exchange(command_, std::nullopt);
}

bool UserChannel::take_quit() { return std::exchange(quit_, false); }

int UserChannel::on_exec(ssh_session, ssh_channel, const char* command, void* self) {
  auto* u = static_cast<UserChannel*>(self);
  if (u->command_seen_) {
    return 1;
  }
  u->command_seen_ = true;
  u->command_ = command ? command : "";  // answered now; output may only follow after this
  u->host_.request_pump();
  return 0;
}

int UserChannel::on_shell(ssh_session s, ssh_channel c, void* self) {
  return on_exec(s, c, "", self);
}

int UserChannel::on_data(ssh_session, ssh_channel, void* data, std::uint32_t len, int, void* self) {
  // With a pty, Ctrl-C and Ctrl-D arrive as bytes: treat them as "I'm done".
  auto* u = static_cast<UserChannel*>(self);
  u->host_.note_data_packet();
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::uint32_t i = 0; i < len; ++i) {
    if (p[i] == 0x03 || p[i] == 0x04) {
      u->quit_ = true;
      u->host_.request_pump();
      break;
    }
  }
  return static_cast<int>(len);
}

void UserChannel::on_close(ssh_session, ssh_channel, void* self) {
  auto* u = static_cast<UserChannel*>(self);
  u->quit_ = true;
  u->host_.request_pump();
}

void UserChannel::write(std::string_view text, bool to_stderr) {
  if (!is_open()) {
    return;
  }
  std::string line;
  for (const char c : text.substr(0, text.find_last_not_of('\n') + 1)) {
    if (c == '\n') {
      line += '\r';
    }
    line += c;
  }
  line += "\r\n";
  if (to_stderr) {
    ssh_channel_write_stderr(channel_, line.data(), static_cast<std::uint32_t>(line.size()));
  } else {
    ssh_channel_write(channel_, line.data(), static_cast<std::uint32_t>(line.size()));
  }
  host_.after_channel_write();
}

void UserChannel::flush_notices() {
  for (const auto& n : notices_) {
    write(n, true);
  }
  notices_.clear();
}

void UserChannel::connection_line(const std::string& line) {
  if (std::uint64_t left_out = 0; connection_lines_.allow(left_out)) {
    write(left_out == 0
              ? line
              : line + " (" + std::to_string(left_out) + " more connection lines not shown)",
          false);
  }
}

void UserChannel::summary() {
  if (const std::uint64_t left_out = connection_lines_.take_left_out(); left_out > 0) {
    write("snigate: (" + std::to_string(left_out) + " more connection lines not shown)", false);
  }
}

void UserChannel::end(int exit_status) {
  if (!is_open()) {
    return;
  }
  ssh_channel_request_send_exit_status(channel_, exit_status);
  ssh_channel_send_eof(channel_);
  ssh_channel_close(channel_);
  host_.after_channel_write();
}

}  // namespace gw::sshd

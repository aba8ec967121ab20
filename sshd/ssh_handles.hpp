// RAII owners for libssh handles. Only sshd/ and keys/host_keys.* include libssh.
// ssh_free() frees a session's channels: a Session declares its SshSessionPtr before any
// channel it owns, and channels are never freed after their session.
#pragma once

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>

#include <memory>

#include "common/unique_handle.hpp"

namespace gw::sshd {

using SshSessionPtr = std::unique_ptr<ssh_session_struct, CFree<&ssh_free>>;
using SshChannelPtr = std::unique_ptr<ssh_channel_struct, CFree<&ssh_channel_free>>;
using SshBindPtr = std::unique_ptr<ssh_bind_struct, CFree<&ssh_bind_free>>;
using SshEventPtr = std::unique_ptr<ssh_event_struct, CFree<&ssh_event_free>>;
using SshKeyPtr = std::unique_ptr<ssh_key_struct, CFree<&ssh_key_free>>;

}  // namespace gw::sshd

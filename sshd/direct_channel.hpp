// The teammate's side of an internal endpoint: `direct-tcpip` channel opens (`ssh -L
// LOCAL:app.internal:443 gw`, `ssh -W app.internal:443 gw`) decided, accepted and handed to the
// owner's endpoint. How the bytes get there, without a second byte pump: a local socket pair.
// One end is bridged to the accepted channel here, on this session's thread, with the same
// tunnel::Bridge every public connection uses; the other end goes to the owner's endpoint
// (TunnelEndpoint::deliver) exactly like a routed public socket, so the owner's side applies
// its CIDR rules (to the teammate's SSH address), its connection limit, pools and takeover,
// counts the connection and writes the one tcp_connection_closed event (binding "internal").
// The kernel's socket buffers are the hand-off between the two sessions' threads, with flow
// control for free.
//
// Deliberately not here: the decision itself (policy.hpp, decide_direct_open: pure), the
// owner's side (session.cpp, start_bridge, unchanged), the channel's libssh details
// (forwarded_channel.*). The teammate's bridge counts into a BridgeStats of its own that
// /metrics never reads: the owner's bridge counts each connection once.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "keys/authorized_keys.hpp"
#include "sshd/forwarded_channel.hpp"
#include "sshd/policy.hpp"
#include "sshd/server_context.hpp"
#include "tunnel/bridge.hpp"

namespace gw::sshd {

/// One session's direct-tcpip channels. Lives on the session's thread.
class DirectChannels {
 public:
  DirectChannels(boost::asio::io_context& ioc, ChannelHost& host,
                 std::shared_ptr<const ServerContext> ctx, std::uint64_t session_id);
  ~DirectChannels();
  DirectChannels(const DirectChannels&) = delete;
  DirectChannels& operator=(const DirectChannels&) = delete;

  /// A direct-tcpip open, from libssh's message callback (`msg` is borrowed): decided with
  /// decide_direct_open against the registry, then accepted and bridged, or refused with the
  /// default open failure (libssh 0.10 can send no other code nor a description: the reason
  /// goes to the log and to take_refusals(), for the session's terminal if it has one). `peer`: the
  /// teammate's SSH address. `only_purpose`: the session has no terminal, no -R and no other direct
  /// channel, so a refused `ssh -W` ends it anyway: such a refusal is answered by disconnecting
  /// with the reason (take_disconnect()), which OpenSSH prints ("Received disconnect ...: snigate:
  /// ..."), instead of the open failure it would print without a reason before exiting.
  /// `within_request_budget`: false when the session's per-second budget of channel and global
  /// requests (session.cpp, request_allowed) is spent; the open is then refused with that reason.
  void open(ssh_message msg, ssh_session session, const keys::AuthorizedKey& key,
            const boost::asio::ip::tcp::endpoint& peer, bool only_purpose,
            bool within_request_budget);

  void check_deadlines(std::chrono::steady_clock::time_point now);
  /// After the pump: drops bridges that finished (never inside one).
  void collect();
  /// Ends every open channel (the session is closing).
  void abort_all(const char* reason);
  /// Drops every bridge without touching its channel: the session's ssh_free frees them.
  void detach_all();
  std::size_t size() const { return bridges_.size() - finished_.size(); }
  /// The refusals since the last call, for the user's terminal (written after the pump, never
  /// from the callback).
  std::vector<std::string> take_refusals() { return std::exchange(refusals_, {}); }
  /// The message to disconnect with (see open()), once; empty if none.
  std::string take_disconnect() { return std::exchange(disconnect_, {}); }

 private:
  boost::asio::io_context& ioc_;
  ChannelHost& host_;
  std::shared_ptr<const ServerContext> ctx_;
  std::uint64_t session_id_;
  std::shared_ptr<tunnel::BridgeStats> leg_stats_ = std::make_shared<tunnel::BridgeStats>();
  std::unordered_map<std::uint64_t, std::shared_ptr<tunnel::Bridge>> bridges_;
  std::vector<std::uint64_t> finished_;
  std::vector<std::string> refusals_;
  std::string disconnect_;
};

}  // namespace gw::sshd

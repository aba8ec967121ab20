#include "sshd/direct_channel.hpp"

#include <libssh/server.h>

#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "common/printable.hpp"

namespace gw::sshd {
namespace {

/// Internal connections are numbered apart from the public listener's (which counts from 1),
/// so the owner's bridges, keyed by connection id, never see two alike.
constexpr std::uint64_t kFirstInternalConnId = std::uint64_t{1} << 48;
/// Direct-tcpip channels one session may have open: each holds a socket pair (two descriptors)
/// and two bridges, so one teammate's client can't spend the gateway's descriptors for everyone;
/// a browser behind an ssh -L opens a few dozen at most.
constexpr std::size_t kMaxDirectChannels = 512;
/// The originator port OpenSSH names for `ssh -W` (channel_connect_stdio_fwd: no socket).
constexpr int kStdioOriginPort = 65535;

}  // namespace

DirectChannels::DirectChannels(boost::asio::io_context& ioc, ChannelHost& host,
                               std::shared_ptr<const ServerContext> ctx, std::uint64_t session_id)
    : ioc_(ioc), host_(host), ctx_(std::move(ctx)), session_id_(session_id) {}

// The session aborts (or detaches) every bridge before its channels go: nothing to do here.
DirectChannels::~DirectChannels() = default;

void DirectChannels::open(ssh_message msg, ssh_session session, const keys::AuthorizedKey& key,
                          const boost::asio::ip::tcp::endpoint& peer, bool only_purpose,
                          bool within_request_budget) {
  const char* raw_host = ssh_message_channel_request_open_destination(msg);
  const int port = ssh_message_channel_request_open_destination_port(msg);
  DirectRequest request{raw_host ? raw_host : "", static_cast<std::uint32_t>(std::max(port, 0))};
  // OpenSSH's `ssh -W` (stdio forwarding) has no local socket and names port 65535 as the
  // originator's; an `ssh -L` names the local client's (ephemeral, below 61000 on Linux).
  const bool stdio = ssh_message_channel_request_open_originator_port(msg) == kStdioOriginPort;
  tunnel::Route route;
  std::optional<tunnel::RemoteRoute> remote;  // cluster mode: the name's winner is another node's
  DirectDecision d;
  if (!within_request_budget) {
    d.code = DirectDecision::Code::administratively_prohibited;
    d.reason = "request_budget";
    d.refusal =
        "this session opened more channels and requests this second than its budget allows: "
        "open fewer connections at once and try again";
  } else if (size() >= kMaxDirectChannels) {
    d.code = DirectDecision::Code::administratively_prohibited;
    d.reason = "limit";
    d.refusal = "this session already has " + std::to_string(kMaxDirectChannels) +
                " connections open through it (the limit): close some first";
  } else {
    d = decide_direct_open(
        request, key.options, key.fingerprint, ctx_->advertise_port,
        [&](const tunnel::Hostname& name) {
          // As the public port routes: the cluster's pick first (a pool spans nodes), this
          // node's endpoints when the pick is local.
          if (ctx_->cluster_routes) {
            remote = ctx_->cluster_routes->find_remote(name.str());
          }
          if (remote) {
            return DirectTarget{true, remote->internal, {remote->key_fingerprint}};
          }
          route = ctx_->registry->route(name.str());
          return DirectTarget{route.endpoint != nullptr, route.internal, route.key_fingerprints};
        });
  }
  if (!d.ok) {
    ctx_->stats->direct_refused++;
    warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                 "direct.refuse conn=s{} fp={} host=\"{}\" port={} reason={} why=\"{}\"{}",
                 session_id_, key.fingerprint, printable(request.host), port, d.reason, d.refusal);
    std::string text = "cannot open " + printable(request.host, 100) + ":" + std::to_string(port) +
                       ": " + d.refusal;
    if (stdio && only_purpose) {
      disconnect_ = "snigate: " + text;  // not answered: the session disconnects with it
      return;
    }
    ssh_message_reply_default(msg);  // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED, no description
    refusals_.push_back(std::move(text));
    return;
  }
  // Accept inside the callback (the message is borrowed) and bind the channel's callbacks at
  // once, before libssh can read data for it.
  ssh_channel accepted = ssh_message_channel_request_open_reply_accept(msg);
  boost::asio::local::stream_protocol::socket ours(ioc_), theirs(ioc_);
  boost::system::error_code ec;
  if (accepted == nullptr || (boost::asio::local::connect_pair(ours, theirs, ec), ec)) {
    ctx_->log->error("direct.accept_failed conn=s{} host={} error=\"{}\"", session_id_,
                     d.name->str(), accepted == nullptr ? ssh_get_error(session) : ec.message());
    if (accepted != nullptr) {
      ssh_channel_free(accepted);  // open: freeing closes it
      host_.after_channel_write();
    }
    refusals_.push_back("cannot open " + d.name->str() + ": the gateway failed; try again");
    return;
  }
  host_.after_channel_write();  // the confirmation may only be queued

  tunnel::IncomingConnection conn{boost::asio::generic::stream_protocol::socket(std::move(theirs)),
                                  {},
                                  d.name->str(),
                                  peer,
                                  kFirstInternalConnId + ctx_->stats->next_internal_conn_id++,
                                  std::chrono::steady_clock::now(),
                                  std::chrono::system_clock::now(),
                                  /*stream=*/nullptr,
                                  /*ingress_node=*/{},
                                  /*internal=*/true,
                                  session_id_,
                                  key.fingerprint};
  const tunnel::ConnectionStart start = conn.start();

  // The teammate's leg: the accepted channel <-> our end of the pair. Its record is not an
  // event (the owner's leg writes the one tcp_connection_closed); it is only dropped.
  auto channel = std::make_shared<ForwardedChannel>(host_, session, accepted);
  tunnel::EndpointLabel label{"direct", "tls://" + d.name->str(), session_id_, key.fingerprint,
                              key.comment};
  tunnel::BridgeConfig config;
  config.idle_timeout = ctx_->idle_timeout;
  auto bridge = std::make_shared<tunnel::Bridge>(
      tunnel::Bridge::Socket(std::move(ours)), std::vector<std::byte>{}, start, std::move(label),
      std::move(channel), config, leg_stats_, ctx_->tunnel_log,
      [this](const tunnel::ConnectionClosed& ev) { finished_.push_back(ev.conn_id); });
  bridges_.emplace(bridge->id(), bridge);
  bridge->start();
  ctx_->log->debug("direct.open conn=s{} t={} host={} fp={}", session_id_, conn.id,
                   conn.server_name, key.fingerprint);
  // The owner's leg: like a routed public connection (its thread, its rules, its event), here
  // or on the owner's node through the relay (which carries the teammate's session).
  if (remote) {
    ctx_->relay->relay(std::move(conn), std::move(*remote));
  } else {
    route.endpoint->deliver(std::move(conn));
  }
}

void DirectChannels::check_deadlines(std::chrono::steady_clock::time_point now) {
  for (auto& [id, bridge] : bridges_) {
    bridge->check_deadlines(now);
  }
}

void DirectChannels::collect() {
  for (const auto id : finished_) {
    bridges_.erase(id);
  }
  finished_.clear();
}

void DirectChannels::abort_all(const char* reason) {
  auto bridges = bridges_;  // abort() reports back into finished_
  for (auto& [id, bridge] : bridges) {
    bridge->abort(reason);
  }
}

void DirectChannels::detach_all() {
  bridges_.clear();
  finished_.clear();
}

}  // namespace gw::sshd

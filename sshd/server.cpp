#include "sshd/server.hpp"

#include <boost/asio/steady_timer.hpp>
#include <stdexcept>

#include "sshd/session.hpp"

namespace gw::sshd {

Server::Server(std::shared_ptr<const ServerContext> ctx, const std::string& host_key_path)
    : ctx_(std::move(ctx)), bind_(ssh_bind_new()) {
  if (!bind_) {
    throw std::runtime_error("ssh_bind_new: out of memory");
  }
  // Don't read /etc/libssh/libssh_server.config: the gateway's behaviour is its own.
  bool no = false;
  ssh_bind_options_set(bind_.get(), SSH_BIND_OPTIONS_PROCESS_CONFIG, &no);
  if (ssh_bind_options_set(bind_.get(), SSH_BIND_OPTIONS_HOSTKEY, host_key_path.c_str()) !=
      SSH_OK) {
    throw std::runtime_error(host_key_path + ": " + ssh_get_error(bind_.get()));
  }
}

boost::asio::ip::tcp::endpoint Server::listen(
    const std::vector<boost::asio::io_context*>& contexts,
    const boost::asio::ip::tcp::endpoint& where) {
  return acceptors_.listen(
      contexts, where,
      [this](boost::asio::io_context& ioc, boost::asio::ip::tcp::socket socket) {
        on_accept(ioc, std::move(socket));
      },
      [this](const boost::system::error_code& ec) {
        ctx_->log->error("ssh.accept_failed error=\"{}\"", ec.message());
      });
}

void Server::on_accept(boost::asio::io_context& ioc, boost::asio::ip::tcp::socket socket) {
  boost::system::error_code ignored;
  const auto remote = socket.remote_endpoint(ignored);
  // Like OpenSSH MaxStartups: a flood of unauthenticated connections must not exhaust us
  // before any of them proves a key.
  if (ctx_->stats->unauthenticated.load() >= ctx_->max_unauthenticated) {
    ctx_->stats->sessions_refused_startups++;
    ctx_->log->warn("ssh.refuse peer={}:{} reason=\"too many unauthenticated connections\"",
                    remote.address().to_string(), remote.port());
    socket.close(ignored);
    return;
  }
  ctx_->stats->sessions_accepted++;
  auto session = std::make_shared<Session>(ioc, ctx_, next_id_++);
  const int fd = socket.release(ignored);
  session->start(bind_.get(), bind_mutex_, fd, remote);
}

}  // namespace gw::sshd

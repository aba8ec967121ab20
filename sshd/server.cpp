#include "sshd/server.hpp"

#include <sys/socket.h>

#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/steady_timer.hpp>
#include <stdexcept>
#include <string>

#include "sshd/session.hpp"

namespace gw::sshd {

void Server::BindFree::operator()(ssh_bind_struct* bind) const noexcept { ssh_bind_free(bind); }

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

boost::asio::ip::tcp::endpoint Server::listen(const std::vector<boost::asio::io_context*>& contexts,
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

void Server::adopt(boost::asio::ip::tcp::socket socket) {
  auto& ioc = static_cast<boost::asio::io_context&>(
      boost::asio::query(socket.get_executor(), boost::asio::execution::context));
  boost::system::error_code ignored;
  socket.non_blocking(false, ignored);  // as our own acceptor hands it over
  on_accept(ioc, std::move(socket));
}

void Server::on_accept(boost::asio::io_context& ioc, boost::asio::ip::tcp::socket socket) {
  boost::system::error_code ignored;
  const auto remote = socket.remote_endpoint(ignored);
  // Like OpenSSH MaxStartups: a flood of unauthenticated connections must not exhaust us
  // before any of them proves a key, and one host must not take every slot.
  auto acquired = ctx_->startups->acquire(remote.address());
  if (acquired.evicted) {
    acquired.evicted->evict();  // made room for this address: see startup_table.hpp
  }
  if (!acquired.slot) {
    ctx_->stats->sessions_refused_startups++;
    using R = StartupTable::Refusal;
    const R why = acquired.refusal;
    const char* log_reason = why == R::penalized          ? " (penalty: this IP left too many "
                                                            "logins unfinished)"
                             : why == R::too_many_from_ip ? " from this IP"
                                                          : "";
    warn_thinned(*ctx_->log, *ctx_->refusal_lines,
                 "ssh.refuse peer={}:{} reason=\"too many unauthenticated connections{}\"{}",
                 remote.address().to_string(), remote.port(), log_reason);
    // RFC 4253 4.2 lets a server send lines before its version string; `ssh -v` and `nc`
    // show this one. The socket is new, so a short non-blocking send can't stall us.
    const std::string line =
        why == R::penalized
            ? std::string(
                  "snigate: your address left too many logins unfinished; try again in "
                  "a minute\r\n")
            : std::string("snigate: too many unauthenticated connections") +
                  (why == R::too_many_from_ip ? " from your address" : "") +
                  "; finish or close the others, or try again in a minute\r\n";
    ::send(socket.native_handle(), line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    socket.close(ignored);
    return;
  }
  auto slot = std::move(acquired.slot);
  ctx_->stats->sessions_accepted++;
  auto session = std::make_shared<Session>(ioc, ctx_, next_id_++);
  const int fd = socket.release(ignored);
  session->start(bind_.get(), bind_mutex_, fd, remote, std::move(slot));
}

}  // namespace gw::sshd

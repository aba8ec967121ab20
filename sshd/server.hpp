// The SSH listener: accepts TCP connections on every I/O thread and hands each to a new
// Session pinned to that thread. Deliberately holds no per-session state: sessions own
// themselves (their pending waits keep them alive).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/listen.hpp"
#include "sshd/server_context.hpp"

struct ssh_bind_struct;  // libssh's; only server.cpp sees libssh (app/ includes this file)

namespace gw::sshd {

class Server {
 public:
  /// Throws std::runtime_error when the host key can't be loaded into libssh.
  Server(std::shared_ptr<const ServerContext> ctx, const std::string& host_key_path);

  /// Takes a connection another listener accepted (SSH on the TLS port) exactly as if this
  /// one had: the same pre-auth limits. Nothing may have been read from it (peeking is fine):
  /// libssh reads the client's version string itself. Runs on the socket's own io_context.
  void adopt(boost::asio::ip::tcp::socket socket);

  /// Thread-safe: stops accepting.
  void stop() { acceptors_.stop(); }

  /// Listens on `where` once per context; returns the bound address (real port for port 0).
  boost::asio::ip::tcp::endpoint listen(const std::vector<boost::asio::io_context*>& contexts,
                                        const boost::asio::ip::tcp::endpoint& where);

 private:
  void on_accept(boost::asio::io_context& ioc, boost::asio::ip::tcp::socket socket);

  std::shared_ptr<const ServerContext> ctx_;
  struct BindFree {
    void operator()(ssh_bind_struct* bind) const noexcept;
  };
  std::unique_ptr<ssh_bind_struct, BindFree> bind_;
  std::mutex bind_mutex_;
  AcceptorSet acceptors_;
  std::atomic<std::uint64_t> next_id_{1};
};

}  // namespace gw::sshd

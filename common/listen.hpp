// Binding one listening address once per I/O thread with SO_REUSEPORT, so the kernel spreads
// accepts over the threads. Port 0 picks a free port once; the other threads reuse it.
// Header-only, Asio only: both listeners (SSH and TLS) use it.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace gw {

using Acceptors = std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>>;

/// Throws boost::system::system_error (control plane: start-up) naming what failed.
inline Acceptors listen_on_each(const std::vector<boost::asio::io_context*>& contexts,
                                boost::asio::ip::tcp::endpoint where) {
  Acceptors out;
  for (auto* ioc : contexts) {
    auto a = std::make_unique<boost::asio::ip::tcp::acceptor>(*ioc);
    a->open(where.protocol());
    a->set_option(boost::asio::ip::tcp::acceptor::reuse_address(true));
    const int one = 1;
    ::setsockopt(a->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (where.address().is_v6()) {
      a->set_option(boost::asio::ip::v6_only(true));
    }
    a->bind(where);
    a->listen(1024);
    where = a->local_endpoint();  // a port-0 request is now the real port for the others
    out.push_back(std::move(a));
  }
  return out;
}

/// Accepts forever: each socket goes to `on_accept(socket)`. On an error (out of descriptors
/// and the like) it calls `on_error(ec)`, backs off 100 ms and goes on; it never exits, so one
/// EMFILE can't stop the listener or make it spin. Stops only when the acceptor closes.
template <class OnAccept, class OnError>
void accept_forever(boost::asio::ip::tcp::acceptor& acceptor, OnAccept on_accept,
                    OnError on_error) {
  acceptor.async_accept([&acceptor, on_accept, on_error](const boost::system::error_code& ec,
                                                         boost::asio::ip::tcp::socket socket) {
    if (ec == boost::asio::error::operation_aborted) {
      return;
    }
    if (ec) {
      on_error(ec);
      auto timer = std::make_shared<boost::asio::steady_timer>(acceptor.get_executor());
      timer->expires_after(std::chrono::milliseconds(100));
      timer->async_wait([&acceptor, on_accept, on_error, timer](const boost::system::error_code& e) {
        if (!e) {
          accept_forever(acceptor, on_accept, on_error);
        }
      });
      return;
    }
    on_accept(std::move(socket));
    accept_forever(acceptor, on_accept, on_error);
  });
}

/// The listening sockets of one listener (one per I/O thread): bind, accept forever, stop.
class AcceptorSet {
 public:
  /// Binds `where` once per context and accepts on each: every socket goes to
  /// `on_accept(io_context&, socket)` on that context's thread, errors to `on_error(ec)`.
  /// Returns the bound address (the real port for port 0). Throws on bind errors (start-up).
  template <class OnAccept, class OnError>
  boost::asio::ip::tcp::endpoint listen(const std::vector<boost::asio::io_context*>& contexts,
                                        const boost::asio::ip::tcp::endpoint& where,
                                        OnAccept on_accept, OnError on_error) {
    auto acceptors = listen_on_each(contexts, where);
    const auto bound = acceptors.front()->local_endpoint();
    for (auto& a : acceptors) {
      auto& ioc = static_cast<boost::asio::io_context&>(a->get_executor().context());
      accept_forever(
          *a, [&ioc, on_accept](boost::asio::ip::tcp::socket s) { on_accept(ioc, std::move(s)); },
          on_error);
      acceptors_.push_back(std::move(a));
    }
    return bound;
  }

  /// Thread-safe: stops accepting (each acceptor is closed on its own thread).
  void stop() {
    for (auto& a : acceptors_) {
      boost::asio::post(a->get_executor(), [acceptor = a.get()] {
        boost::system::error_code ec;
        acceptor->close(ec);
      });
    }
  }

 private:
  Acceptors acceptors_;
};

}  // namespace gw

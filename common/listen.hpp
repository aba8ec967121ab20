// One listening socket per address, accepted on by every I/O thread: each thread's acceptor
// holds a dup() of the same socket, so the threads share its queue (whichever is free takes
// the next connection). Port 0 picks a free port once. Header-only, Asio only: both listeners
// (SSH and TLS) use it.
//
// Deliberately not SO_REUSEPORT: with it, a second process of the same user (a second gateway,
// an old one still running) binds the same address too and the kernel hands it a share of the
// visitors, silently. One socket bound without it makes that second bind fail with
// EADDRINUSE, which start-up reports as one line naming the option. dup() keeps the
// per-thread acceptors without a probe-then-bind race.
#pragma once

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/system_error.hpp>
#include <cerrno>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace gw {

using Acceptors = std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>>;

/// Binds and listens on `where` once, then gives every context an acceptor on its own dup()
/// of that socket. Throws boost::system::system_error (control plane: start-up) naming what
/// failed; address_in_use means another socket, in this process or another, holds `where`.
inline Acceptors listen_on_each(const std::vector<boost::asio::io_context*>& contexts,
                                const boost::asio::ip::tcp::endpoint& where) {
  Acceptors out;
  auto first = std::make_unique<boost::asio::ip::tcp::acceptor>(*contexts.front());
  first->open(where.protocol());
  // SO_REUSEADDR only lets us rebind over TIME_WAIT leftovers of our own last run; on Linux it
  // never lets two live listeners share a port.
  first->set_option(boost::asio::ip::tcp::acceptor::reuse_address(true));
  if (where.address().is_v6()) {
    first->set_option(boost::asio::ip::v6_only(true));
  }
  first->bind(where);
  first->listen(1024);
  const int fd = first->native_handle();
  out.push_back(std::move(first));
  for (std::size_t i = 1; i < contexts.size(); ++i) {
    const int copy = ::dup(fd);
    if (copy < 0) {
      throw boost::system::system_error(errno, boost::system::system_category(), "dup");
    }
    auto a = std::make_unique<boost::asio::ip::tcp::acceptor>(*contexts[i]);
    boost::system::error_code ec;
    a->assign(where.protocol(), copy, ec);  // the acceptor owns `copy` from here on
    if (ec) {
      ::close(copy);
      throw boost::system::system_error(ec, "assign");
    }
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
      timer->async_wait(
          [&acceptor, on_accept, on_error, timer](const boost::system::error_code& e) {
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
  /// Binds `where` once and accepts on it from each context: every socket goes to
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

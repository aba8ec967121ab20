#include "cluster/framed_stream.hpp"

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstring>

#include "common/tls_alert.hpp"

namespace gw::cluster {
namespace {

using Io = tunnel::PublicStream::Io;
using Result = tunnel::PublicStream::Result;

constexpr std::size_t kEndFrame = 0;
constexpr std::size_t kResetFrame = 0xFFFF;

/// How a direction ended: not yet, with an end frame (EOF), with a reset frame.
enum class End { open, end, reset };

std::byte* scratch() {
  thread_local std::array<std::byte, 16 * 1024> buffer;
  return buffer.data();
}

}  // namespace

struct FramedStream::Wire : std::enable_shared_from_this<Wire> {
  std::unique_ptr<tunnel::PublicStream> inner;
  Reuse reuse;
  boost::asio::any_io_executor executor;
  std::vector<std::byte> prefix;
  std::size_t prefix_used = 0;
  // read side
  std::array<std::byte, 2> header{};
  std::size_t header_got = 0;
  std::size_t remaining = 0;  ///< payload bytes of the current frame still to read
  End read_end = End::open;
  // write side: encoded frames, written from out_sent on
  std::vector<std::byte> out;
  std::size_t out_sent = 0;
  std::size_t unreported = 0;  ///< payload in `out` the caller was not told was taken
  End write_end = End::open;
  bool failed = false;  ///< broken: the connection can only be closed
  bool done = false;    ///< handed over or closed
  // close()'s drain
  std::unique_ptr<boost::asio::steady_timer> deadline;
  std::size_t drained = 0;

  bool clean() const {
    return read_end != End::open && write_end != End::open && out.empty() && !failed &&
           prefix_used == prefix.size() && remaining == 0 && header_got == 0 && inner;
  }

  /// From the prefix while it lasts, then from inner.
  Result read_raw(std::span<std::byte> into, bool prefix_only) {
    if (prefix_used < prefix.size()) {
      const std::size_t n = std::min(into.size(), prefix.size() - prefix_used);
      std::memcpy(into.data(), prefix.data() + prefix_used, n);
      prefix_used += n;
      if (prefix_used == prefix.size()) {
        std::vector<std::byte>().swap(prefix);
        prefix_used = 0;
      }
      return {Io::ok, n};
    }
    if (prefix_only) {
      return {Io::would_block};
    }
    return inner->read_some(into);
  }

  Result decode(std::span<std::byte> into, bool prefix_only) {
    if (read_end == End::end) {
      return {Io::eof};
    }
    if (read_end == End::reset || failed || !inner) {
      return {Io::error};
    }
    std::size_t total = 0;
    // What the loop stopped on, once it has bytes for the caller: those go now, and an end or
    // error comes with the next call (both are remembered).
    const auto stop = [&](Io status) -> Result {
      if (total > 0) {
        return {Io::ok, total};
      }
      return {status};
    };
    while (total < into.size()) {
      if (remaining == 0) {
        while (header_got < header.size()) {
          const auto r = read_raw(std::span(header).subspan(header_got), prefix_only);
          if (r.status != Io::ok) {
            if (r.status != Io::would_block) {
              failed = true;  // the connection ended inside the stream: never a clean end
            }
            return stop(r.status == Io::would_block ? Io::would_block : Io::error);
          }
          header_got += r.bytes;
        }
        header_got = 0;
        const std::size_t length = (std::to_integer<std::size_t>(header[0]) << 8) |
                                   std::to_integer<std::size_t>(header[1]);
        if (length == kEndFrame || length == kResetFrame) {
          read_end = length == kEndFrame ? End::end : End::reset;
          return stop(length == kEndFrame ? Io::eof : Io::error);
        }
        if (length > kMaxPayload) {
          failed = true;  // no node sends that: a broken peer
          return stop(Io::error);
        }
        remaining = length;
      }
      const auto r =
          read_raw(into.subspan(total, std::min(remaining, into.size() - total)), prefix_only);
      if (r.status != Io::ok) {
        if (r.status != Io::would_block) {
          failed = true;
        }
        return stop(r.status == Io::would_block ? Io::would_block : Io::error);
      }
      remaining -= r.bytes;
      total += r.bytes;
    }
    return {Io::ok, total};
  }

  /// Writes what `out` holds: ok once it is all gone.
  Io flush() {
    while (out_sent < out.size()) {
      const auto r = inner->write_some(std::span(out).subspan(out_sent));
      if (r.status == Io::would_block) {
        return Io::would_block;
      }
      if (r.status != Io::ok) {
        failed = true;
        return Io::error;
      }
      out_sent += r.bytes;
    }
    out.clear();
    out_sent = 0;
    return Io::ok;
  }

  /// Our direction's last frame, after whatever `out` still holds.
  void end_writing(End how) {
    write_end = how;
    const auto b = std::byte{static_cast<std::uint8_t>(how == End::end ? kEndFrame : 0xFF)};
    out.push_back(b);
    out.push_back(b);
  }

  /// After shutdown_send() found the socket full: the end frame goes when it drains (the
  /// Bridge writes nothing more, so nobody else would flush it).
  void flush_when_writable() {
    inner->wait_writable([self = shared_from_this()](bool ready) {
      if (ready && !self->done && self->flush() == Io::would_block) {
        self->flush_when_writable();
      }
    });
  }

  /// close(): our end out, the peer's end in (discarding its data), then reuse; bounded.
  void finish() {
    if (done || !inner) {
      return;
    }
    inner->cancel_waits();  // the Bridge's and the channel's: ours come next
    if (failed || !reuse) {
      give_up();
      return;
    }
    if (write_end == End::open) {
      end_writing(End::reset);
    }
    drain();
  }

  void drain() {
    if (done) {
      return;
    }
    const Io f = flush();
    if (f == Io::error) {
      give_up();
      return;
    }
    if (f == Io::would_block) {
      arm_deadline();
      inner->wait_writable([self = shared_from_this()](bool ready) {
        if (ready) {
          self->drain();
        }
      });
      return;
    }
    while (read_end == End::open) {
      const auto r = decode(std::span(scratch(), 16 * 1024), false);
      if (r.status == Io::ok) {
        drained += r.bytes;
        if (drained > kDrainBytes) {
          give_up();  // the peer is still sending much: not worth waiting for
          return;
        }
        continue;
      }
      if (r.status == Io::would_block) {
        arm_deadline();
        inner->wait_readable([self = shared_from_this()](bool ready) {
          if (ready) {
            self->drain();
          }
        });
        return;
      }
      if (failed) {
        give_up();
        return;
      }
    }
    hand_over();
  }

  void arm_deadline() {
    if (deadline) {
      return;
    }
    deadline = std::make_unique<boost::asio::steady_timer>(executor, kDrainTime);
    deadline->async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec && !self->done) {
        self->give_up();
      }
    });
  }

  void hand_over() {
    if (!clean()) {
      give_up();
      return;
    }
    done = true;
    if (deadline) {
      deadline->cancel();
    }
    inner->cancel_waits();
    // Posted: close() runs inside the Bridge's finish(), and the next visitor (delivered at once
    // when its header is already here) must not start inside it.
    boost::asio::post(executor, [self = shared_from_this()] {
      auto reuse = std::move(self->reuse);
      reuse(std::move(self->inner));
    });
  }

  void give_up() {
    done = true;
    if (deadline) {
      deadline->cancel();
    }
    inner->close();  // waits in flight end "not ready"
  }
};

FramedStream::FramedStream(std::unique_ptr<tunnel::PublicStream> inner, Reuse reuse,
                           std::vector<std::byte> prefix)
    : wire_(std::make_shared<Wire>()) {
  wire_->executor = inner->executor();
  wire_->inner = std::move(inner);
  wire_->reuse = std::move(reuse);
  wire_->prefix = std::move(prefix);
}

FramedStream::~FramedStream() { close(); }

void FramedStream::append_frames(std::vector<std::byte>& out, std::span<const std::byte> payload) {
  for (std::size_t at = 0; at < payload.size();) {
    const std::size_t n = std::min(kMaxPayload, payload.size() - at);
    out.push_back(static_cast<std::byte>(n >> 8));
    out.push_back(static_cast<std::byte>(n & 0xff));
    out.insert(out.end(), payload.begin() + static_cast<std::ptrdiff_t>(at),
               payload.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
  }
}

std::vector<std::byte> FramedStream::take_prefix_payload() {
  std::vector<std::byte> out(wire_->prefix.size());
  const auto r = wire_->decode(out, /*prefix_only=*/true);
  out.resize(r.status == Io::ok ? r.bytes : 0);
  return out;
}

tunnel::PublicStream::Result FramedStream::read_some(std::span<std::byte> into) {
  return wire_->decode(into, false);
}

tunnel::PublicStream::Result FramedStream::write_some(std::span<const std::byte> from) {
  Wire& w = *wire_;
  if (w.failed || !w.inner || w.write_end != End::open) {
    return {Io::error};
  }
  std::size_t total = 0;
  if (!w.out.empty()) {
    // A frame of the caller's first bytes from an earlier call (the contract: after a
    // would-block the caller starts again with the same bytes), not yet reported as taken.
    const Io f = w.flush();
    if (f != Io::ok) {
      return {f};
    }
    total = std::min(w.unreported, from.size());
    w.unreported = 0;
  }
  while (total < from.size()) {
    const std::size_t n = std::min(kMaxPayload, from.size() - total);
    w.out.clear();
    append_frames(w.out, from.subspan(total, n));
    w.out_sent = 0;
    const Io f = w.flush();
    if (f == Io::would_block) {
      w.unreported = n;
      break;
    }
    if (f != Io::ok) {
      return total > 0 ? Result{Io::ok, total} : Result{Io::error};
    }
    total += n;
  }
  return total > 0 ? Result{Io::ok, total} : Result{Io::would_block};
}

void FramedStream::wait_readable(Wake wake) {
  Wire& w = *wire_;
  if (w.prefix_used < w.prefix.size() || !w.inner || w.done) {
    const bool ready = w.inner && !w.done;
    boost::asio::post(w.executor, [wake = std::move(wake), ready] { wake(ready); });
    return;
  }
  w.inner->wait_readable(std::move(wake));
}

void FramedStream::wait_writable(Wake wake) {
  Wire& w = *wire_;
  if (!w.inner || w.done) {
    boost::asio::post(w.executor, [wake = std::move(wake)] { wake(false); });
    return;
  }
  w.inner->wait_writable(std::move(wake));
}

void FramedStream::shutdown_send() {
  Wire& w = *wire_;
  if (w.failed || !w.inner || w.done || w.write_end != End::open) {
    return;
  }
  w.end_writing(End::end);
  if (w.flush() == Io::would_block) {
    w.flush_when_writable();
  }
}

std::size_t FramedStream::alert_and_close(std::uint8_t description) {
  std::size_t sent = 0;
  const Wire& w = *wire_;
  if (w.inner && !w.failed && !w.done && w.write_end == End::open) {
    // The alert is the visitor's TLS, so it travels as data; close() then resets our direction
    // (the far side closes the visitor after the alert) and the connection is reused.
    const auto alert = gw::make_alert(description);
    if (write_some(alert).status != Io::error) {
      sent = alert.size();  // written, or in `out` for close()'s flush
    }
  }
  close();
  return sent;
}

void FramedStream::close() {
  if (closed_) {
    return;
  }
  closed_ = true;
  wire_->finish();
}

void FramedStream::cancel_waits() {
  if (wire_->inner && !wire_->done) {
    wire_->inner->cancel_waits();
  }
}

boost::asio::any_io_executor FramedStream::executor() { return wire_->executor; }

bool FramedStream::detach() { return wire_->inner && wire_->inner->detach(); }

bool FramedStream::attach(boost::asio::io_context& ioc) {
  if (!wire_->inner || !wire_->inner->attach(ioc)) {
    return false;
  }
  wire_->executor = wire_->inner->executor();
  return true;
}

}  // namespace gw::cluster

// libFuzzer harness for the relay's frame decoder (cluster/framed_stream.*, relay protocol 2):
// arbitrary bytes from a peer must not crash, hang or read out of bounds. The input is the
// stream's prefix (as the owner's header read leaves it), the far end of the socket is closed,
// so every byte goes through the decoder, the stream then ends, and close() finds the peer gone.
// Checked: the payload out is never more than the input, each read returns at most what was
// asked, the stream ends in EOF or an error, and a connection whose peer is gone is never
// handed over for reuse.
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "cluster/framed_stream.hpp"

namespace {

void check(bool ok) {
  if (!ok) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static boost::asio::io_context ioc;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
    return 0;
  }
  ::close(fds[1]);  // the peer sent exactly the input, then closed
  gw::tunnel::SocketStream::Socket socket(ioc);
  socket.assign(boost::asio::generic::stream_protocol(AF_UNIX, 0), fds[0]);
  bool reused = false;
  std::vector<std::byte> prefix(reinterpret_cast<const std::byte*>(data),
                                reinterpret_cast<const std::byte*>(data) + size);
  {
    gw::cluster::FramedStream framed(
        std::make_unique<gw::tunnel::SocketStream>(std::move(socket)),
        [&](std::unique_ptr<gw::tunnel::PublicStream> s) {
          reused = true;
          s->close();
        },
        std::move(prefix));
    std::size_t out = framed.take_prefix_payload().size();
    std::array<std::byte, 4096> buf;
    gw::tunnel::PublicStream::Result r;
    // Each ok call takes at least one input byte: bounded by the input.
    for (std::size_t calls = 0; calls <= size + 1; ++calls) {
      r = framed.read_some(buf);
      if (r.status != gw::tunnel::PublicStream::Io::ok) {
        break;
      }
      check(r.bytes > 0 && r.bytes <= buf.size());
      out += r.bytes;
    }
    check(r.status == gw::tunnel::PublicStream::Io::eof ||
          r.status == gw::tunnel::PublicStream::Io::error);
    check(out <= size);
    framed.shutdown_send();  // the closed peer: the write fails
  }
  ioc.poll();  // what close() posted or cancelled
  ioc.restart();
  check(!reused);
  return 0;
}

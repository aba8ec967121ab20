// A visitor's bytes inside a relay connection that outlives the visitor (relay protocol 2,
// negotiated by ALPN, see relay_tls.hpp). Each direction is a sequence of frames
//     [u16 length, big-endian][length bytes]      length 1..kMaxPayload: data
//     [00 00]                                      end: the sender's FIN (read as EOF)
//     [FF FF]                                      reset: the sender's side aborted (read as an
//     error)
// Once both directions ended with an end or reset frame, the TLS connection between the nodes is
// exactly where a fresh one is, so close() hands it to `reuse` (the ingress's spare shelf, the
// owner's wait for the next header) instead of closing it: the next visitor costs no handshake.
// close() ends our direction with a reset frame if it is still open, and when the peer's
// direction is still open it reads and discards what the peer still sends until its end frame
// (the peer answers a reset with one at once), for at most kDrainTime and kDrainBytes; a visitor
// that resets (most HTTP clients do, after the response) so leaves its connection behind too.
// A broken stream (an I/O error, a frame cut short, a drain over its bounds) closes the TLS
// connection for real, which the far side reads as a reset, never as a clean end.
//
// A frame is at most one TLS record (kMaxPayload + 2 = 16 KiB), so framing costs a 2-byte header
// and one copy of the written bytes, no extra record and no extra syscall. Reads go straight
// into the caller's buffer. Deliberately not here: the status byte and the header (they come
// before the first frame, unframed), and the visitor's deadlines (the Bridge's).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "tunnel/public_stream.hpp"

namespace gw::cluster {

class FramedStream final : public tunnel::PublicStream {
 public:
  /// Most payload bytes per frame: header and payload fill one TLS record.
  static constexpr std::size_t kMaxPayload = 16 * 1024 - 2;
  /// close()'s wait for the peer's end frame, and what it may read meanwhile.
  static constexpr std::chrono::milliseconds kDrainTime{1000};
  static constexpr std::size_t kDrainBytes = 256 * 1024;
  /// Gets the clean connection back (called once, on its thread): the `inner` it was made with.
  using Reuse = std::function<void(std::unique_ptr<tunnel::PublicStream>)>;

  /// `inner`: in the relay a TlsStream (any stream in tests and the fuzz target). `prefix`:
  /// bytes already read from `inner` past the unframed part (the owner's header read takes some
  /// of the first frames with it): decoded before anything is read from inner.
  FramedStream(std::unique_ptr<tunnel::PublicStream> inner, Reuse reuse,
               std::vector<std::byte> prefix = {});
  ~FramedStream() override;
  FramedStream(const FramedStream&) = delete;
  FramedStream& operator=(const FramedStream&) = delete;

  /// Appends `payload` to `out` as data frames (the ingress's ClientHello goes with its header).
  static void append_frames(std::vector<std::byte>& out, std::span<const std::byte> payload);

  /// The payload of the whole frames in the prefix (the owner's peeked ClientHello), taken out
  /// of it; never reads from inner.
  std::vector<std::byte> take_prefix_payload();

  Result read_some(std::span<std::byte> into) override;
  Result write_some(std::span<const std::byte> from) override;
  void wait_readable(Wake wake) override;
  void wait_writable(Wake wake) override;
  void shutdown_send() override;
  std::size_t alert_and_close(std::uint8_t description) override;
  /// Reuse or drain as the file comment says (the drain goes on after this object is gone).
  void close() override;
  void cancel_waits() override;
  boost::asio::any_io_executor executor() override;
  bool detach() override;
  bool attach(boost::asio::io_context& ioc) override;

  struct Wire;  ///< the framed connection's state (shared with a drain that outlives us)

 private:
  std::shared_ptr<Wire> wire_;
  bool closed_ = false;
};

}  // namespace gw::cluster

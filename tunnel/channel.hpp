// The stream behind an endpoint, as the Bridge sees it: a flow-controlled, half-closable byte
// channel that opens asynchronously. Today sshd's forwarded-tcpip channel implements it; a relay
// connection to another node or a direct-tcpip channel are the next kinds. Deliberately no
// libssh (or any transport) types here: what is peculiar to one transport (open polling,
// window growth, what to do with an open still in flight) stays in its implementation.
//
// Threading: a Channel and its handler live on one thread (the one that owns the transport).
#pragma once

#include <cstddef>
#include <optional>
#include <span>

namespace gw::tunnel {

/// What a Channel reports to its one user (the Bridge).
class ChannelHandler {
 public:
  virtual ~ChannelHandler() = default;
  /// The open succeeded: data may flow both ways.
  virtual void on_channel_opened() = 0;
  /// The far end refused the open (e.g. the ssh client's upstream is down).
  virtual void on_channel_open_failed() = 0;
  /// Bytes from the far end. May run re-entrantly from inside any Channel call (transports
  /// poll their socket from anywhere), so the handler only consumes: it must not call back into
  /// the channel, nor end itself synchronously. Returns how many bytes it took; the channel
  /// keeps the rest, stops delivering (and withholds its window: real back-pressure) until
  /// resume_reading().
  virtual std::size_t on_channel_data(std::span<const std::byte> data) = 0;
  /// The far end sent EOF: after every byte it sent was delivered or is held by the channel.
  virtual void on_channel_eof() = 0;
  /// The far end closed the channel: nothing more can be sent on it.
  virtual void on_channel_closed() = 0;
  /// After want_writable(): write() can take bytes again.
  virtual void on_channel_writable() = 0;
  /// The far end broke the channel's rules (e.g. sent past the window we gave it): the
  /// connection ends now, with `reason` as its close reason.
  virtual void on_channel_failed(const char* reason) = 0;
};

class Channel {
 public:
  virtual ~Channel() = default;
  /// Starts the open and binds `handler`, which must outlive the channel or close() it first.
  /// Never calls the handler from inside start(): the result comes later.
  virtual void start(ChannelHandler& handler) = 0;
  /// Sends what the window and the transport's output take now, possibly nothing; nullopt when
  /// the channel failed (the handler should end).
  virtual std::optional<std::size_t> write(std::span<const std::byte> data) = 0;
  /// True while write() would take nothing (no window, or the transport's output is backed
  /// up): the handler stops reading its side and calls want_writable().
  virtual bool blocked() const = 0;
  /// Asks for one on_channel_writable() once write() can take bytes again.
  virtual void want_writable() = 0;
  /// The handler has room again after taking less than offered: the channel delivers what it
  /// holds (possibly synchronously, through on_channel_data) and resumes.
  virtual void resume_reading() = 0;
  /// Half-closes our direction once every written byte is out. false when the channel failed.
  virtual bool send_eof() = 0;
  /// The handler is done with the channel: no more events. The implementation disposes of it
  /// the way its transport needs (an open still in flight is waited for, then closed).
  virtual void close() = 0;
};

}  // namespace gw::tunnel

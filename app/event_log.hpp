// The event log (`--event-log PATH|-`): one JSON object per line, flushed per event, so it is
// safe to `tail -f` and to ship line by line. Field names and envelope follow ngrok's event
// payloads (event_id, event_type, event_timestamp, object; tcp_connection_closed.v0 puts the
// connection under object.conn). docs/events.md documents every field.
// Deliberately not here: buffering, async writing, rotation by size (logrotate + SIGHUP does it).
//
// How to wire (lead):
//   auto log = std::make_unique<gw::app::JsonEventLog>(config.event_log);  // throws if unopenable
//   gw::tunnel::EventSink& sink = *log;  // hand to the SSH server and the SNI router
//   signals.add(SIGHUP); on SIGHUP: std::string err; if (!log->reopen(&err)) log error err;
// The log must outlive every producer (destroy it after the io_contexts have stopped).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>

#include "app/json.hpp"
#include "tunnel/events.hpp"

namespace gw::app {

/// `2024-05-01T12:00:00.123456Z`: RFC 3339, UTC, microseconds.
std::string rfc3339(tunnel::SystemTime t);

/// Each event as its one-line JSON object (no trailing newline). `event_id` is used as given.
std::string to_json(const tunnel::ConnectionClosed& ev, std::string_view event_id);
std::string to_json(const tunnel::SessionStarted& ev, std::string_view event_id);
std::string to_json(const tunnel::SessionEnded& ev, std::string_view event_id);
std::string to_json(const tunnel::EndpointCreated& ev, std::string_view event_id);
std::string to_json(const tunnel::EndpointDeleted& ev, std::string_view event_id);

/// Writes events to a file (opened for append, created 0640 if missing) or to stdout for "-".
/// Thread-safe; a failed write drops that event and counts it in dropped().
class JsonEventLog final : public tunnel::EventSink {
 public:
  /// Opens `path` ("-" = stdout). Throws std::system_error naming the path if it can't.
  explicit JsonEventLog(std::string path);
  ~JsonEventLog() override;
  JsonEventLog(const JsonEventLog&) = delete;
  JsonEventLog& operator=(const JsonEventLog&) = delete;

  void emit(const tunnel::ConnectionClosed& ev) override;
  void emit(const tunnel::SessionStarted& ev) override;
  void emit(const tunnel::SessionEnded& ev) override;
  void emit(const tunnel::EndpointCreated& ev) override;
  void emit(const tunnel::EndpointDeleted& ev) override;

  /// Closes and reopens the path (after logrotate moved it). On failure keeps writing to the
  /// old file, returns false and sets `*error`. A no-op returning true for stdout.
  bool reopen(std::string* error = nullptr);

  /// Events lost to write errors since start.
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  const std::string& path() const { return path_; }

 private:
  std::string next_event_id();
  template <class Event>
  void write_event(const Event& ev) noexcept;  // never throws: a failure counts in dropped_
  void write_line(std::string line);

  const std::string path_;
  const std::uint32_t nonce_;  // per process, so ids from restarts don't collide
  std::atomic<std::uint64_t> seq_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::mutex mutex_;
  std::FILE* file_ = nullptr;  // guarded by mutex_; stdout is borrowed, never closed
};

}  // namespace gw::app

// The event log (`--event-log PATH|-`): one JSON object per line, so it is safe to `tail -f` and
// to ship line by line. Field names and envelope follow ngrok's event payloads (event_id,
// event_type, event_timestamp, object; tcp_connection_closed.v0 puts the connection under
// object.conn). docs/events.md documents every field.
//
// emit() runs on I/O threads, so it only builds the line and hands it to a bounded queue; one
// writer thread of the log's own writes and flushes each batch (a line is in the file a few
// microseconds after emit unless the disk stalls). When the queue is full (the disk is stalled
// or slower than a flood of events) the event is dropped and counted, never waited for:
// dropped() feeds snigate_events_dropped_total, and the writer logs drops at most once a second.
// Destruction writes everything still queued, so a clean shutdown loses nothing.
// Deliberately not here: rotation by size (logrotate + SIGHUP does it), retries of failed writes.
//
// How to wire (lead):
//   auto log = std::make_unique<gw::app::JsonEventLog>(config.event_log, app_logger);  // throws
//   gw::tunnel::EventSink& sink = *log;  // hand to the SSH server and the SNI router
//   on SIGHUP, off the I/O threads: std::string err; if (!log->reopen(&err)) log error err;
// The log must outlive every producer (destroy it after the io_contexts have stopped).
#pragma once

#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "app/json.hpp"
#include "common/bounded_queue.hpp"
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

/// Writes events to a file (opened for append, created 0640 if missing) or to stdout for "-",
/// from a writer thread of its own. Thread-safe; emit() never blocks on I/O.
class JsonEventLog final : public tunnel::EventSink {
 public:
  /// 8192 lines: typically ~5 MB, and seconds of events at flood rates, enough to ride out a
  /// short disk stall; the bound (a line is at most a few KB after escaping and truncation)
  /// keeps a stalled disk from turning into unbounded memory.
  static constexpr std::size_t kDefaultQueueCapacity = 8192;

  /// Opens `path` ("-" = stdout) and starts the writer. Throws std::system_error naming the path
  /// if it can't open it. `log` (may be null) gets the drop and write-error lines.
  explicit JsonEventLog(std::string path, std::shared_ptr<spdlog::logger> log = nullptr,
                        std::size_t queue_capacity = kDefaultQueueCapacity);
  /// Writes every queued event, then closes the file.
  ~JsonEventLog() override;
  JsonEventLog(const JsonEventLog&) = delete;
  JsonEventLog& operator=(const JsonEventLog&) = delete;

  void emit(const tunnel::ConnectionClosed& ev) override;
  void emit(const tunnel::SessionStarted& ev) override;
  void emit(const tunnel::SessionEnded& ev) override;
  void emit(const tunnel::EndpointCreated& ev) override;
  void emit(const tunnel::EndpointDeleted& ev) override;

  /// Closes and reopens the path (after logrotate moved it). Events emitted before the call go
  /// to the old file. Blocks (opening the file, waiting for the writer): call it off the I/O
  /// threads. On failure keeps writing to the old file, returns false and sets `*error`.
  /// A no-op returning true for stdout.
  bool reopen(std::string* error = nullptr);

  /// Blocks until every event emitted before the call is written (or counted as dropped).
  void flush();

  /// Events not written since start, whatever the reason: the queue was full at emit, the
  /// write failed (disk full, EIO), or building the line ran out of memory. Their event_ids
  /// are skipped, so a reader sees the gap.
  std::uint64_t dropped() const {
    return queue_.dropped() + write_failed_.load(std::memory_order_relaxed);
  }
  const std::string& path() const { return path_; }

 private:
  std::string next_event_id();
  template <class Event>
  void enqueue(const Event& ev) noexcept;  // never throws: a failure counts in dropped()
  void run_writer();
  void write_batch(const std::vector<std::string>& lines);
  /// Logs drops not yet reported: at most once a second, unless `final`.
  void report_drops(bool final);

  const std::string path_;
  const std::uint32_t nonce_;  // per process, so ids from restarts don't collide
  const std::shared_ptr<spdlog::logger> log_;
  std::atomic<std::uint64_t> seq_{0};
  std::atomic<std::uint64_t> write_failed_{0};
  BoundedQueue<std::string> queue_;  // complete lines, newline included

  std::mutex file_mutex_;      // held by the writer for a batch, by reopen() for the swap
  std::FILE* file_ = nullptr;  // guarded by file_mutex_; stdout is borrowed, never closed

  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  std::uint64_t done_ = 0;  // guarded by done_mutex_: lines popped and handled, for flush()

  // Writer-thread state for report_drops().
  std::uint64_t reported_queue_full_ = 0;
  std::uint64_t reported_write_failed_ = 0;
  std::chrono::steady_clock::time_point last_report_{};

  std::thread writer_;  // last: starts once everything above is constructed
};

}  // namespace gw::app

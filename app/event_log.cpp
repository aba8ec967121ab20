// JSON-lines event writer: builds lines on the emitting thread, writes them on its own. See
// event_log.hpp; the field list is docs/events.md.
#include "app/event_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <optional>
#include <random>
#include <system_error>

#include "app/json.hpp"

namespace gw::app {
namespace {

JsonObject envelope(std::string_view event_id, std::string_view type, tunnel::SystemTime when) {
  JsonObject j;
  j.str("event_id", event_id).str("event_type", type).str("event_timestamp", rfc3339(when));
  return j;
}

// Producers should stamp their events; an unstamped one gets the write time.
tunnel::SystemTime or_now(tunnel::SystemTime t) {
  return t == tunnel::SystemTime{} ? std::chrono::system_clock::now() : t;
}

std::int64_t ns(std::chrono::nanoseconds d) { return static_cast<std::int64_t>(d.count()); }

}  // namespace

std::string rfc3339(tunnel::SystemTime t) {
  using namespace std::chrono;
  const auto us = floor<microseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1'000'000);
  long frac = static_cast<long>(us % 1'000'000);
  if (frac < 0) {  // before 1970: floor, not truncate
    frac += 1'000'000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[96];
  std::snprintf(out, sizeof out, "%.*s.%06ldZ", static_cast<int>(n), buf, frac);
  return out;
}

std::string to_json(const tunnel::ConnectionClosed& ev, std::string_view event_id) {
  const auto d = std::chrono::duration_cast<tunnel::SystemTime::duration>(ev.duration);
  const auto start =
      ev.start == tunnel::SystemTime{} ? std::chrono::system_clock::now() - d : ev.start;
  const auto end = start + d;
  JsonObject j = envelope(event_id, "tcp_connection_closed.v0", end);
  j.begin("object");
  j.begin("conn")
      .num("id", ev.conn_id)
      .str("client_ip", ev.client_ip)
      .num("client_port", static_cast<std::uint64_t>(ev.client_port))
      .str_or_null("server_name", ev.server_name)
      .str("start_ts", rfc3339(start))
      .str("end_ts", rfc3339(end))
      .num("duration_ns", ns(ev.duration))
      .num("bytes_in", ev.bytes_in)
      .num("bytes_out", ev.bytes_out)
      .str("close_reason", ev.close_reason)
      .str_or_null("refusal_reason", ev.refusal_reason)
      .str_or_null("ingress_node", ev.ingress_node)
      .str("binding", tunnel::binding_name(ev.internal));
  if (ev.internal) {
    j.begin("client_session")
        .num("id", ev.client_session_id)
        .str_or_null("key_fingerprint", ev.client_key_fingerprint)
        .end();
  }
  j.end();
  if (ev.endpoint_id.empty() && ev.endpoint_url.empty()) {
    j.null("endpoint");
  } else {
    j.begin("endpoint")
        .str("id", ev.endpoint_id)
        .str("url", ev.endpoint_url)
        .str("proto", "tls")
        .end();
  }
  if (ev.session_id == 0) {
    j.null("session");
  } else {
    j.begin("session")
        .num("id", ev.session_id)
        .str_or_null("key_fingerprint", ev.key_fingerprint)
        .str_or_null("key_name", ev.key_name)
        .end();
  }
  j.end();
  return j.take();
}

std::string to_json(const tunnel::SessionStarted& ev, std::string_view event_id) {
  const auto when = or_now(ev.time);
  JsonObject j = envelope(event_id, "session_started.v0", when);
  j.begin("object")
      .num("id", ev.session_id)
      .str("client_ip", ev.client_ip)
      .num("client_port", static_cast<std::uint64_t>(ev.client_port))
      .str("user", ev.user)
      .str_or_null("key_fingerprint", ev.key_fingerprint)
      .str_or_null("key_name", ev.key_name)
      .str("started_at", rfc3339(when))
      .end();
  return j.take();
}

std::string to_json(const tunnel::SessionEnded& ev, std::string_view event_id) {
  const auto when = or_now(ev.time);
  const auto started = when - std::chrono::duration_cast<tunnel::SystemTime::duration>(ev.duration);
  JsonObject j = envelope(event_id, "session_ended.v0", when);
  j.begin("object")
      .num("id", ev.session_id)
      .str("reason", ev.reason)
      .str_or_null("message", ev.message)
      .str("client_ip", ev.client_ip)
      .num("client_port", static_cast<std::uint64_t>(ev.client_port))
      .str_or_null("key_fingerprint", ev.key_fingerprint)
      .str_or_null("key_name", ev.key_name)
      .str("started_at", rfc3339(started))
      .str("ended_at", rfc3339(when))
      .num("duration_ns", ns(ev.duration))
      .num("connections", ev.connections)
      .num("bytes_in", ev.bytes_in)
      .num("bytes_out", ev.bytes_out)
      .end();
  return j.take();
}

std::string to_json(const tunnel::EndpointCreated& ev, std::string_view event_id) {
  const auto when = or_now(ev.time);
  JsonObject j = envelope(event_id, "endpoint_created.v0", when);
  j.begin("object")
      .str("id", ev.endpoint_id)
      .str("url", ev.url)
      .str("proto", "tls")
      .boolean("pool", ev.pool)
      .str("binding", tunnel::binding_name(ev.internal))
      .num("session_id", ev.session_id)
      .str_or_null("key_fingerprint", ev.key_fingerprint)
      .str_or_null("key_name", ev.key_name)
      .str("created_at", rfc3339(when))
      .end();
  return j.take();
}

std::string to_json(const tunnel::EndpointDeleted& ev, std::string_view event_id) {
  const auto when = or_now(ev.time);
  JsonObject j = envelope(event_id, "endpoint_deleted.v0", when);
  j.begin("object")
      .str("id", ev.endpoint_id)
      .str("url", ev.url)
      .str("proto", "tls")
      .num("session_id", ev.session_id)
      .str("reason", ev.reason)
      .str("deleted_at", rfc3339(when))
      .end();
  return j.take();
}

namespace {

std::FILE* open_append(const std::string& path) {
  // open(2) rather than fopen so a new file gets 0640 (events carry client IPs) and O_CLOEXEC.
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    return nullptr;
  }
  std::FILE* f = ::fdopen(fd, "a");
  if (f == nullptr) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
  }
  return f;
}

}  // namespace

JsonEventLog::JsonEventLog(std::string path, std::shared_ptr<spdlog::logger> log,
                           std::size_t queue_capacity)
    : path_(std::move(path)),
      nonce_(static_cast<std::uint32_t>(std::random_device{}())),
      log_(std::move(log)),
      queue_(queue_capacity) {
  if (path_ == "-") {
    file_ = stdout;
  } else {
    file_ = open_append(path_);
    if (file_ == nullptr) {
      throw std::system_error(errno, std::generic_category(), "event log " + path_);
    }
  }
  writer_ = std::thread([this] { run_writer(); });
}

JsonEventLog::~JsonEventLog() {
  queue_.close();  // the writer empties the queue, then returns
  writer_.join();
  if (file_ != stdout) {
    std::fclose(file_);
  }
}

bool JsonEventLog::reopen(std::string* error) {
  if (path_ == "-") {
    return true;
  }
  std::FILE* fresh = open_append(path_);  // outside the lock: open may be slow on NFS
  if (fresh == nullptr) {
    if (error != nullptr) {
      *error = "event log " + path_ + ": " + std::generic_category().message(errno);
    }
    return false;
  }
  flush();  // what was emitted before the rotation belongs in the rotated file
  std::FILE* old = nullptr;
  {
    std::lock_guard lock(file_mutex_);
    old = file_;
    file_ = fresh;
  }
  std::fclose(old);  // the writer flushed it before releasing the lock: nothing is pending
  return true;
}

void JsonEventLog::flush() {
  // Lines leave the queue in push order, so once `done_` reaches the number pushed so far,
  // every line emitted before this call has been handled.
  const std::uint64_t target = queue_.pushed();
  std::unique_lock lock(done_mutex_);
  done_cv_.wait(lock, [&] { return done_ >= target; });
}

std::string JsonEventLog::next_event_id() {
  const std::uint64_t n = seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  char buf[40];
  std::snprintf(buf, sizeof buf, "ev_%08x%012llx", nonce_,
                static_cast<unsigned long long>(n & 0xffffffffffffULL));
  return buf;
}

template <class Event>
void JsonEventLog::enqueue(const Event& ev) noexcept {
  // Built here rather than on the writer so an unstamped event gets the time it happened.
  try {
    std::string line = to_json(ev, next_event_id());
    line += '\n';
    // When the queue is full the line is dropped, and the queue counts it.
    queue_.try_push(std::move(line));
  } catch (...) {  // bad_alloc: drop the event rather than take the caller down
    write_failed_.fetch_add(1, std::memory_order_relaxed);
  }
}

void JsonEventLog::write_batch(const std::vector<std::string>& lines) {
  std::lock_guard lock(file_mutex_);
  std::uint64_t unflushed = 0;
  for (const auto& line : lines) {
    if (std::fwrite(line.data(), 1, line.size(), file_) == line.size()) {
      ++unflushed;
    } else {
      std::clearerr(file_);
      write_failed_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // One flush per batch: a line is in the file as soon as the writer has seen it, and a
  // burst costs one write(2), not one per event.
  if (std::fflush(file_) != 0) {
    std::clearerr(file_);
    write_failed_.fetch_add(unflushed, std::memory_order_relaxed);  // some may have made it
  }
}

void JsonEventLog::report_drops(bool final) {
  if (!log_) {
    return;
  }
  const std::uint64_t queue_full = queue_.dropped();
  const std::uint64_t write_failed = write_failed_.load(std::memory_order_relaxed);
  if (queue_full == reported_queue_full_ && write_failed == reported_write_failed_) {
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!final && now - last_report_ < std::chrono::seconds(1)) {
    return;  // a stalled disk must not also become a flood of log lines
  }
  log_->error(
      "events.dropped path={} queue_full={} write_failed={} total_queue_full={} "
      "total_write_failed={} capacity={} (events lost: the event log could not keep up or "
      "could not write)",
      path_, queue_full - reported_queue_full_, write_failed - reported_write_failed_, queue_full,
      write_failed, queue_.capacity());
  reported_queue_full_ = queue_full;
  reported_write_failed_ = write_failed;
  last_report_ = now;
}

void JsonEventLog::run_writer() {
  std::vector<std::string> batch;
  for (bool open = true; open;) {
    // Sleep until there is work; with drops not yet reported, wake within a second to say so.
    const bool unreported = queue_.dropped() != reported_queue_full_ ||
                            write_failed_.load(std::memory_order_relaxed) != reported_write_failed_;
    std::size_t handled = 0;
    try {
      open =
          queue_.pop_all(batch, unreported ? std::optional(std::chrono::seconds(1)) : std::nullopt);
      handled = batch.size();
      write_batch(batch);
    } catch (...) {  // bad_alloc: the batch's lines are lost, the writer goes on
      handled = batch.size();
      write_failed_.fetch_add(handled, std::memory_order_relaxed);
    }
    batch.clear();
    {
      std::lock_guard lock(done_mutex_);
      done_ += handled;
    }
    done_cv_.notify_all();
    report_drops(!open);
  }
}

void JsonEventLog::emit(const tunnel::ConnectionClosed& ev) { enqueue(ev); }
void JsonEventLog::emit(const tunnel::SessionStarted& ev) { enqueue(ev); }
void JsonEventLog::emit(const tunnel::SessionEnded& ev) { enqueue(ev); }
void JsonEventLog::emit(const tunnel::EndpointCreated& ev) { enqueue(ev); }
void JsonEventLog::emit(const tunnel::EndpointDeleted& ev) { enqueue(ev); }

}  // namespace gw::app

// JSON-lines event writer. See event_log.hpp; the field list is docs/events.md.
#include "app/event_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>
#include <system_error>

namespace gw::app {
namespace {

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 if there is none
// (RFC 3629 table: no overlongs, no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xbf) {
    return i + k < s.size() && byte(k) >= lo && byte(k) <= hi;
  };
  const unsigned b0 = byte(0);
  if (b0 < 0x80) {
    return 1;
  }
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    return cont(1) ? 2 : 0;
  }
  if (b0 >= 0xe0 && b0 <= 0xef) {
    const unsigned lo = b0 == 0xe0 ? 0xa0 : 0x80;
    const unsigned hi = b0 == 0xed ? 0x9f : 0xbf;
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    const unsigned lo = b0 == 0xf0 ? 0x90 : 0x80;
    const unsigned hi = b0 == 0xf4 ? 0x8f : 0xbf;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

void append_u_escape(std::string& out, unsigned cp) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\u%04x", cp);
  out += buf;
}

// A minimal streaming JSON object writer: enough for flat and nested objects of our events.
class Json {
 public:
  Json() { out_ += '{'; }

  Json& str(std::string_view k, std::string_view v) {
    key(k);
    append_json_string(out_, v);
    return *this;
  }
  // Empty means "not applicable": written as null so consumers can tell it from "".
  Json& str_or_null(std::string_view k, std::string_view v) {
    if (v.empty()) {
      return null(k);
    }
    return str(k, v);
  }
  Json& num(std::string_view k, std::uint64_t v) {
    key(k);
    out_ += std::to_string(v);
    return *this;
  }
  Json& num(std::string_view k, std::int64_t v) {
    key(k);
    out_ += std::to_string(v);
    return *this;
  }
  Json& boolean(std::string_view k, bool v) {
    key(k);
    out_ += v ? "true" : "false";
    return *this;
  }
  Json& null(std::string_view k) {
    key(k);
    out_ += "null";
    return *this;
  }
  Json& begin(std::string_view k) {
    key(k);
    out_ += '{';
    first_ = true;
    return *this;
  }
  Json& end() {
    out_ += '}';
    first_ = false;
    return *this;
  }
  std::string take() {
    out_ += '}';
    return std::move(out_);
  }

 private:
  void key(std::string_view k) {
    if (!first_) {
      out_ += ',';
    }
    first_ = false;
    append_json_string(out_, k);
    out_ += ':';
  }

  std::string out_;
  bool first_ = true;
};

Json envelope(std::string_view event_id, std::string_view type, tunnel::SystemTime when) {
  Json j;
  j.str("event_id", event_id).str("event_type", type).str("event_timestamp", rfc3339(when));
  return j;
}

// Producers should stamp their events; an unstamped one gets the write time.
tunnel::SystemTime or_now(tunnel::SystemTime t) {
  return t == tunnel::SystemTime{} ? std::chrono::system_clock::now() : t;
}

std::int64_t ns(std::chrono::nanoseconds d) { return static_cast<std::int64_t>(d.count()); }

}  // namespace

void append_json_string(std::string& out, std::string_view s, std::size_t max) {
  out += '"';
  std::size_t i = 0;
  bool cut = false;
  while (i < s.size()) {
    const std::size_t len = utf8_sequence_length(s, i);
    if (i + (len == 0 ? 1 : len) > max) {
      cut = true;
      break;
    }
    if (len == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD for this one byte; resynchronise on the next
      ++i;
      continue;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (len == 1) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            append_u_escape(out, c);
          } else {
            out += static_cast<char>(c);
          }
      }
    } else if (len == 2 && c == 0xc2 && static_cast<unsigned char>(s[i + 1]) < 0xa0) {
      // C1 controls U+0080..U+009F (0x9b is a terminal CSI): escape, don't pass through.
      append_u_escape(out, static_cast<unsigned char>(s[i + 1]));
    } else if (len == 3 && c == 0xe2 && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(s[i + 2]) == 0xa8 ||
                static_cast<unsigned char>(s[i + 2]) == 0xa9)) {
      // U+2028/U+2029: valid JSON, but line breaks for JavaScript and some viewers.
      append_u_escape(out, 0x2000 + static_cast<unsigned char>(s[i + 2]) - 0x80);
    } else {
      out.append(s.data() + i, len);
    }
    i += len;
  }
  if (cut) {
    out += "...";
  }
  out += '"';
}

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
  Json j = envelope(event_id, "tcp_connection_closed.v0", end);
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
      .end();
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
  Json j = envelope(event_id, "session_started.v0", when);
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
  Json j = envelope(event_id, "session_ended.v0", when);
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
  Json j = envelope(event_id, "endpoint_created.v0", when);
  j.begin("object")
      .str("id", ev.endpoint_id)
      .str("url", ev.url)
      .str("proto", "tls")
      .boolean("pool", ev.pool)
      .num("session_id", ev.session_id)
      .str_or_null("key_fingerprint", ev.key_fingerprint)
      .str_or_null("key_name", ev.key_name)
      .str("created_at", rfc3339(when))
      .end();
  return j.take();
}

std::string to_json(const tunnel::EndpointDeleted& ev, std::string_view event_id) {
  const auto when = or_now(ev.time);
  Json j = envelope(event_id, "endpoint_deleted.v0", when);
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

JsonEventLog::JsonEventLog(std::string path)
    : path_(std::move(path)), nonce_(static_cast<std::uint32_t>(std::random_device{}())) {
  if (path_ == "-") {
    file_ = stdout;
    return;
  }
  file_ = open_append(path_);
  if (file_ == nullptr) {
    throw std::system_error(errno, std::generic_category(), "event log " + path_);
  }
}

JsonEventLog::~JsonEventLog() {
  std::lock_guard lock(mutex_);
  if (file_ != nullptr && file_ != stdout) {
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
  std::FILE* old = nullptr;
  {
    std::lock_guard lock(mutex_);
    old = file_;
    file_ = fresh;
  }
  std::fclose(old);
  return true;
}

std::string JsonEventLog::next_event_id() {
  const std::uint64_t n = seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  char buf[40];
  std::snprintf(buf, sizeof buf, "ev_%08x%012llx", nonce_,
                static_cast<unsigned long long>(n & 0xffffffffffffULL));
  return buf;
}

void JsonEventLog::write_line(std::string line) {
  line += '\n';
  std::lock_guard lock(mutex_);
  const bool ok =
      std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0;
  if (!ok) {
    std::clearerr(file_);
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

template <class Event>
void JsonEventLog::write_event(const Event& ev) noexcept {
  try {
    write_line(to_json(ev, next_event_id()));
  } catch (...) {  // bad_alloc: drop the event rather than take the caller down
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void JsonEventLog::emit(const tunnel::ConnectionClosed& ev) { write_event(ev); }
void JsonEventLog::emit(const tunnel::SessionStarted& ev) { write_event(ev); }
void JsonEventLog::emit(const tunnel::SessionEnded& ev) { write_event(ev); }
void JsonEventLog::emit(const tunnel::EndpointCreated& ev) { write_event(ev); }
void JsonEventLog::emit(const tunnel::EndpointDeleted& ev) { write_event(ev); }

}  // namespace gw::app

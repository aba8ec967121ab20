// Tests for the JSON-lines event log: string escaping (control bytes, quotes, invalid UTF-8,
// truncation) always yields valid JSON that decodes back; each event type's fields; writing to
// a temp file from many threads; reopen() for logrotate. Lines are parsed back with Boost.JSON.
#include "app/event_log.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/src.hpp>  // the one TU in unit_app that compiles Boost.JSON
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace gw::app {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

std::string encode(std::string_view s, std::size_t max = 1024) {
  std::string out;
  append_json_string(out, s, max);
  return out;
}

// Parses `literal` as a JSON string (strict: Boost.JSON rejects invalid UTF-8) and decodes it.
std::string decode(const std::string& literal) {
  json::error_code ec;
  const json::value v = json::parse(literal, ec);
  EXPECT_FALSE(ec) << ec.message() << " in " << literal;
  return ec ? std::string() : std::string(v.as_string());
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "evlog-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::filesystem::path operator/(const char* name) const { return path_ / name; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::vector<json::object> read_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<json::object> out;
  std::string line;
  while (std::getline(in, line)) {
    json::error_code ec;
    json::value v = json::parse(line, ec);
    EXPECT_FALSE(ec) << ec.message() << " in: " << line;
    if (!ec) {
      EXPECT_TRUE(v.is_object()) << line;
      out.push_back(v.as_object());
    }
  }
  return out;
}

tunnel::SystemTime at(std::int64_t unix_us) {
  return tunnel::SystemTime(
      std::chrono::duration_cast<tunnel::SystemTime::duration>(std::chrono::microseconds(unix_us)));
}

// ---- escaping -----------------------------------------------------------------------------

// Plain ASCII and valid multi-byte UTF-8 pass through unchanged.
TEST(JsonString, PassesValidUtf8Through) {
  EXPECT_EQ(encode("app.example.com"), "\"app.example.com\"");
  EXPECT_EQ(encode("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92"),
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92\"");
}

// Quotes, backslashes and every control character are escaped; the decoded value is exact.
TEST(JsonString, EscapesQuotesBackslashAndControls) {
  EXPECT_EQ(encode("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(encode("\n\r\t"), R"("\n\r\t")");
  EXPECT_EQ(encode(std::string("\0\x01\x1b\x7f", 4)), R"("\u0000\u0001\u001b\u007f")");
  std::string all;
  for (int c = 0; c < 0x80; ++c) {
    all += static_cast<char>(c);
  }
  const std::string literal = encode(all);
  for (const char c : literal) {
    EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << "raw control byte";
  }
  EXPECT_EQ(decode(literal), all);
}

// C1 controls (0x9b is a terminal CSI) and U+2028/2029 are escaped, still decoding exactly.
TEST(JsonString, EscapesC1AndLineSeparators) {
  EXPECT_EQ(encode("\xc2\x9b"), R"("\u009b")");
  EXPECT_EQ(encode("\xe2\x80\xa8\xe2\x80\xa9"), R"("\u2028\u2029")");
  EXPECT_EQ(decode(encode("x\xc2\x85y")), "x\xc2\x85y");
  EXPECT_EQ(encode("\xc2\xa0"), "\"\xc2\xa0\"");  // U+00A0 is printable: passes
}

// Each byte of an invalid sequence becomes U+FFFD: overlongs, surrogates, truncated
// sequences, stray continuations, bytes that never occur in UTF-8.
TEST(JsonString, ReplacesInvalidUtf8PerByte) {
  const std::string fffd = "\xef\xbf\xbd";
  struct Case {
    const char* name;
    std::string in;
    std::string decoded;
  };
  const std::vector<Case> cases = {
      {"lone continuation", "a\x80z", "a" + fffd + "z"},
      {"0xff", "\xff", fffd},
      {"overlong slash", "\xc0\xaf", fffd + fffd},
      {"overlong 3-byte", "\xe0\x80\xaf", fffd + fffd + fffd},
      {"surrogate", "\xed\xa0\x80", fffd + fffd + fffd},
      {"above U+10FFFF", "\xf4\x90\x80\x80", fffd + fffd + fffd + fffd},
      {"truncated at end", "ok\xe2\x82", "ok" + fffd + fffd},
      {"truncated then ascii", std::string("\xe2\x82") + "A", fffd + fffd + "A"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(decode(encode(c.in)), c.decoded) << c.name;
  }
}

// Random bytes always give a literal that a strict parser accepts.
TEST(JsonString, RandomBytesAlwaysParse) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 2000; ++round) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) {
      c = static_cast<char>(rng());
    }
    json::error_code ec;
    json::parse(encode(s), ec);
    ASSERT_FALSE(ec) << "round " << round;
  }
}

// Long strings are cut at a character boundary (never mid-sequence) and marked "...".
TEST(JsonString, TruncatesAtCharacterBoundary) {
  EXPECT_EQ(encode("abcdef", 4), "\"abcd...\"");
  EXPECT_EQ(encode("abcd", 4), "\"abcd\"");
  EXPECT_EQ(encode("ab\xe2\x82\xac", 4), "\"ab...\"");  // the euro sign would cross the limit
  EXPECT_EQ(decode(encode(std::string(5000, 'x'))).size(), 1024u + 3u);
}

TEST(Rfc3339, FormatsUtcWithMicroseconds) {
  EXPECT_EQ(rfc3339(at(0)), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(rfc3339(at(1714564800123456)), "2024-05-01T12:00:00.123456Z");
  EXPECT_EQ(rfc3339(at(-1)), "1969-12-31T23:59:59.999999Z");
}

// ---- events ---------------------------------------------------------------------------------

// Proves a relayed connection's record (cluster mode, written by the owner) names the ingress.
TEST(EventJson, ConnectionClosedNamesTheIngressNode) {
  tunnel::ConnectionClosed ev;
  ev.client_ip = "203.0.113.9";
  ev.close_reason = "closed";
  ev.ingress_node = "node-1";
  const auto v = json::parse(to_json(ev, "ev_1")).as_object();
  EXPECT_EQ(v.at("object").at("conn").at("ingress_node"), "node-1");
}

tunnel::ConnectionClosed routed_connection() {
  tunnel::ConnectionClosed ev;
  ev.endpoint_id = "ep_12";
  ev.endpoint_url = "tls://app.example.com";
  ev.server_name = "app.example.com";
  ev.client_ip = "203.0.113.9";
  ev.client_port = 51234;
  ev.start = at(1714564800000000);
  ev.duration = 1500ms;
  ev.bytes_in = 1048576;
  ev.bytes_out = 4096;
  ev.close_reason = "closed";
  ev.key_fingerprint = "SHA256:abc";
  ev.key_name = "alice@laptop";
  ev.conn_id = 902;
  ev.session_id = 17;
  return ev;
}

// A routed connection: ngrok-style envelope, conn fields, endpoint and session objects.
TEST(EventJson, ConnectionClosedRouted) {
  const auto v = json::parse(to_json(routed_connection(), "ev_1")).as_object();
  EXPECT_EQ(v.at("event_id"), "ev_1");
  EXPECT_EQ(v.at("event_type"), "tcp_connection_closed.v0");
  EXPECT_EQ(v.at("event_timestamp"), "2024-05-01T12:00:01.500000Z");  // the close time
  const auto& obj = v.at("object").as_object();
  const auto& conn = obj.at("conn").as_object();
  EXPECT_EQ(conn.at("id").as_int64(), 902);
  EXPECT_EQ(conn.at("client_ip"), "203.0.113.9");
  EXPECT_EQ(conn.at("client_port").as_int64(), 51234);
  EXPECT_EQ(conn.at("server_name"), "app.example.com");
  EXPECT_TRUE(conn.at("ingress_node").is_null());  // reached this node itself
  EXPECT_EQ(conn.at("start_ts"), "2024-05-01T12:00:00.000000Z");
  EXPECT_EQ(conn.at("end_ts"), "2024-05-01T12:00:01.500000Z");
  EXPECT_EQ(conn.at("duration_ns").as_int64(), 1'500'000'000);
  EXPECT_EQ(conn.at("bytes_in").as_int64(), 1048576);
  EXPECT_EQ(conn.at("bytes_out").as_int64(), 4096);
  EXPECT_EQ(conn.at("close_reason"), "closed");
  EXPECT_TRUE(conn.at("refusal_reason").is_null());
  const auto& ep = obj.at("endpoint").as_object();
  EXPECT_EQ(ep.at("id"), "ep_12");
  EXPECT_EQ(ep.at("url"), "tls://app.example.com");
  EXPECT_EQ(ep.at("proto"), "tls");
  const auto& session = obj.at("session").as_object();
  EXPECT_EQ(session.at("id").as_int64(), 17);
  EXPECT_EQ(session.at("key_fingerprint"), "SHA256:abc");
  EXPECT_EQ(session.at("key_name"), "alice@laptop");
}

// A refusal before routing: endpoint and session are null, the reason is set, and a hostile
// SNI (quotes, newline, ESC, invalid UTF-8) stays inside one valid line.
TEST(EventJson, ConnectionClosedRefusedWithHostileSni) {
  tunnel::ConnectionClosed ev;
  ev.server_name = std::string("x\"y\n\x1b[2J\xff", 9);
  ev.client_ip = "198.51.100.7";
  ev.client_port = 40000;
  ev.start = at(1);
  ev.close_reason = "refused";
  ev.refusal_reason = "no_route";
  const std::string line = to_json(ev, "ev_2");
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.find('\x1b'), std::string::npos);
  const auto v = json::parse(line).as_object();
  const auto& obj = v.at("object").as_object();
  EXPECT_TRUE(obj.at("endpoint").is_null());
  EXPECT_TRUE(obj.at("session").is_null());
  const auto& conn = obj.at("conn").as_object();
  EXPECT_EQ(conn.at("refusal_reason"), "no_route");
  EXPECT_EQ(conn.at("server_name"), "x\"y\n\x1b[2J\xef\xbf\xbd");
}

// Missing SNI is null, not "".
TEST(EventJson, EmptyServerNameIsNull) {
  tunnel::ConnectionClosed ev;
  ev.refusal_reason = "no_sni";
  const auto v = json::parse(to_json(ev, "ev_3")).as_object();
  EXPECT_TRUE(v.at("object").at("conn").at("server_name").is_null());
}

TEST(EventJson, SessionStartedAndEnded) {
  tunnel::SessionStarted s{
      17, "192.0.2.4", 50022, "alice", "SHA256:abc", "alice@laptop", at(1714564800000000)};
  auto v = json::parse(to_json(s, "ev_4")).as_object();
  EXPECT_EQ(v.at("event_type"), "session_started.v0");
  EXPECT_EQ(v.at("event_timestamp"), "2024-05-01T12:00:00.000000Z");
  auto obj = v.at("object").as_object();
  EXPECT_EQ(obj.at("id").as_int64(), 17);
  EXPECT_EQ(obj.at("client_ip"), "192.0.2.4");
  EXPECT_EQ(obj.at("client_port").as_int64(), 50022);
  EXPECT_EQ(obj.at("user"), "alice");
  EXPECT_EQ(obj.at("key_fingerprint"), "SHA256:abc");
  EXPECT_EQ(obj.at("key_name"), "alice@laptop");
  EXPECT_EQ(obj.at("started_at"), "2024-05-01T12:00:00.000000Z");

  tunnel::SessionEnded e;
  e.session_id = 17;
  e.reason = "admin_close";
  e.message = "maintenance";
  e.duration = 90s;
  e.client_ip = "192.0.2.4";
  e.client_port = 50022;
  e.connections = 3;
  e.bytes_in = 10;
  e.bytes_out = 20;
  e.time = at(1714564890000000);
  v = json::parse(to_json(e, "ev_5")).as_object();
  EXPECT_EQ(v.at("event_type"), "session_ended.v0");
  obj = v.at("object").as_object();
  EXPECT_EQ(obj.at("id").as_int64(), 17);
  EXPECT_EQ(obj.at("reason"), "admin_close");
  EXPECT_EQ(obj.at("message"), "maintenance");
  EXPECT_EQ(obj.at("started_at"), "2024-05-01T12:00:00.000000Z");
  EXPECT_EQ(obj.at("ended_at"), "2024-05-01T12:01:30.000000Z");
  EXPECT_EQ(obj.at("duration_ns").as_int64(), 90'000'000'000);
  EXPECT_EQ(obj.at("connections").as_int64(), 3);
  EXPECT_EQ(obj.at("bytes_in").as_int64(), 10);
  EXPECT_EQ(obj.at("bytes_out").as_int64(), 20);
  EXPECT_TRUE(obj.at("key_fingerprint").is_null());
}

TEST(EventJson, EndpointCreatedAndDeleted) {
  tunnel::EndpointCreated c{
      "ep_12", "tls://app.example.com", 17, "SHA256:abc", "alice@laptop", true, at(1)};
  auto v = json::parse(to_json(c, "ev_6")).as_object();
  EXPECT_EQ(v.at("event_type"), "endpoint_created.v0");
  auto obj = v.at("object").as_object();
  EXPECT_EQ(obj.at("id"), "ep_12");
  EXPECT_EQ(obj.at("url"), "tls://app.example.com");
  EXPECT_EQ(obj.at("proto"), "tls");
  EXPECT_EQ(obj.at("pool"), true);
  EXPECT_EQ(obj.at("session_id").as_int64(), 17);
  EXPECT_EQ(obj.at("created_at"), "1970-01-01T00:00:00.000001Z");

  tunnel::EndpointDeleted d{"ep_12", "tls://app.example.com", 17, "session_ended", at(1)};
  v = json::parse(to_json(d, "ev_7")).as_object();
  EXPECT_EQ(v.at("event_type"), "endpoint_deleted.v0");
  obj = v.at("object").as_object();
  EXPECT_EQ(obj.at("id"), "ep_12");
  EXPECT_EQ(obj.at("reason"), "session_ended");
  EXPECT_EQ(obj.at("deleted_at"), "1970-01-01T00:00:00.000001Z");
}

// An event without a timestamp gets the write time rather than 1970.
TEST(EventJson, UnstampedEventGetsNow) {
  auto v = json::parse(to_json(tunnel::EndpointDeleted{}, "ev_8")).as_object();
  EXPECT_NE(v.at("event_timestamp"), "1970-01-01T00:00:00.000000Z");
  tunnel::ConnectionClosed c;
  c.duration = std::chrono::seconds(2);
  v = json::parse(to_json(c, "ev_9")).as_object();
  EXPECT_NE(v.at("object").at("conn").at("start_ts"), "1970-01-01T00:00:00.000000Z");
  EXPECT_NE(v.at("object").at("conn").at("end_ts"), "1970-01-01T00:00:02.000000Z");
}

// ---- the file writer --------------------------------------------------------------------------

// All five event types land as five parseable lines with unique ev_ ids.
TEST(JsonEventLog, WritesOneLinePerEvent) {
  TempDir dir;
  const auto path = dir / "events.jsonl";
  {
    JsonEventLog log(path.string());
    tunnel::EventSink& sink = log;
    sink.emit(routed_connection());
    sink.emit(tunnel::SessionStarted{});
    sink.emit(tunnel::SessionEnded{});
    sink.emit(tunnel::EndpointCreated{});
    sink.emit(tunnel::EndpointDeleted{});
    // Written while the log is open, not only at close.
    log.flush();
    EXPECT_EQ(read_lines(path).size(), 5u);
    EXPECT_EQ(log.dropped(), 0u);
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 5u);
  const std::vector<std::string> types = {"tcp_connection_closed.v0", "session_started.v0",
                                          "session_ended.v0", "endpoint_created.v0",
                                          "endpoint_deleted.v0"};
  std::set<std::string> ids;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(std::string(lines[i].at("event_type").as_string()), types[i]);
    const std::string id(lines[i].at("event_id").as_string());
    EXPECT_EQ(id.rfind("ev_", 0), 0u) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
}

// Appends to an existing file rather than truncating it.
TEST(JsonEventLog, AppendsToExistingFile) {
  TempDir dir;
  const auto path = dir / "events.jsonl";
  { std::ofstream(path) << "{\"old\":1}\n"; }
  {
    JsonEventLog log(path.string());
    log.emit(tunnel::EndpointDeleted{});
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(lines[0].contains("old"));
}

// Emitting from several threads at once never interleaves lines.
TEST(JsonEventLog, ConcurrentEmitKeepsLinesWhole) {
  TempDir dir;
  const auto path = dir / "events.jsonl";
  constexpr int kThreads = 4;
  constexpr int kEach = 250;
  {
    JsonEventLog log(path.string());
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&log] {
        auto ev = routed_connection();
        ev.server_name = std::string(300, 'a') + ".example.com";  // long enough to matter
        for (int i = 0; i < kEach; ++i) {
          log.emit(ev);
        }
      });
    }
    for (auto& t : threads) {
      t.join();
    }
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kThreads * kEach));
  std::set<std::string> ids;
  for (const auto& l : lines) {
    ids.insert(std::string(l.at("event_id").as_string()));
  }
  EXPECT_EQ(ids.size(), lines.size());
}

// logrotate: after a rename, reopen() starts a fresh file at the original path.
TEST(JsonEventLog, ReopenAfterRotation) {
  TempDir dir;
  const auto path = dir / "events.jsonl";
  const auto rotated = dir / "events.jsonl.1";
  JsonEventLog log(path.string());
  log.emit(tunnel::SessionStarted{});
  std::filesystem::rename(path, rotated);
  log.emit(tunnel::SessionStarted{});  // still goes to the renamed file
  std::string err;
  ASSERT_TRUE(log.reopen(&err)) << err;
  log.emit(tunnel::SessionEnded{});
  log.flush();
  EXPECT_EQ(read_lines(rotated).size(), 2u);
  const auto fresh = read_lines(path);
  ASSERT_EQ(fresh.size(), 1u);
  EXPECT_EQ(fresh[0].at("event_type"), "session_ended.v0");
}

// A failed reopen reports why and keeps writing to the old file.
TEST(JsonEventLog, FailedReopenKeepsOldFile) {
  TempDir dir;
  const auto sub = dir.path() / "sub";
  std::filesystem::create_directory(sub);
  const auto path = sub / "events.jsonl";
  const auto moved = dir / "events.jsonl";
  JsonEventLog log(path.string());
  std::filesystem::rename(path, moved);
  std::filesystem::remove(sub);  // now the path can't be created
  std::string err;
  EXPECT_FALSE(log.reopen(&err));
  EXPECT_NE(err.find("events.jsonl"), std::string::npos) << err;
  log.emit(tunnel::SessionEnded{});
  log.flush();
  EXPECT_EQ(read_lines(moved).size(), 1u);
  EXPECT_EQ(log.dropped(), 0u);
}

// Proves: destroying the log (what shutdown does) writes every event still queued, in emit
// order, even when they were emitted just before.
TEST(JsonEventLog, DestructionWritesEverythingQueued) {
  TempDir dir;
  const auto path = dir / "events.jsonl";
  constexpr int kEvents = 3000;
  {
    JsonEventLog log(path.string());
    for (int i = 0; i < kEvents; ++i) {
      tunnel::SessionStarted ev;
      ev.session_id = static_cast<std::uint64_t>(i + 1);
      log.emit(ev);
    }
  }
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kEvents));
  for (int i = 0; i < kEvents; ++i) {
    EXPECT_EQ(lines[i].at("object").at("id").as_int64(), i + 1);
  }
}

// Proves: when the writer can't keep up (here it is stuck writing into a pipe nobody reads), emit
// still returns at once, events beyond the queue's capacity are dropped and counted, the ones
// queued are written once the reader catches up, and the drops are logged.
TEST(JsonEventLog, FullQueueDropsAndCountsWithoutBlocking) {
  TempDir dir;
  const auto path = dir / "events.fifo";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  // A reader must exist for the log's open(O_WRONLY) not to block; it reads nothing yet.
  const int reader = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  std::ostringstream logged;
  auto logger = std::make_shared<spdlog::logger>(
      "events", std::make_shared<spdlog::sinks::ostream_sink_mt>(logged));
  std::uint64_t emitted = 0;
  std::uint64_t dropped = 0;
  std::string received;
  // No ASSERT from here to the join: an early return would leave the writer stuck on the pipe.
  auto log = std::make_unique<JsonEventLog>(path.string(), logger, 4);
  tunnel::ConnectionClosed ev = routed_connection();
  ev.server_name = std::string(900, 'x');  // ~1 KB lines: the pipe buffer fills quickly
  // Bounded: the pipe holds at most 1 MiB and the queue 4 lines, so drops start long before.
  while (log->dropped() == 0 && emitted < 100000) {
    log->emit(ev);
    ++emitted;
  }
  dropped = log->dropped();
  EXPECT_GT(dropped, 0u) << "never dropped after " << emitted << " events";
  // Now drain the pipe with blocking reads until the log closes its end.
  EXPECT_EQ(::fcntl(reader, F_SETFL, 0), 0);
  std::thread drain([&] {
    char buf[65536];
    for (ssize_t n; (n = ::read(reader, buf, sizeof buf)) > 0;) {
      received.append(buf, static_cast<std::size_t>(n));
    }
  });
  log->flush();  // returns once the reader has taken what was queued
  EXPECT_EQ(log->dropped(), dropped);
  log.reset();  // closes the write end: the drain sees EOF
  drain.join();
  ::close(reader);
  const auto lines = static_cast<std::uint64_t>(std::count(received.begin(), received.end(), '\n'));
  EXPECT_EQ(lines, emitted - dropped);
  EXPECT_NE(logged.str().find("events.dropped"), std::string::npos) << logged.str();
  EXPECT_NE(logged.str().find("total_queue_full=" + std::to_string(dropped)), std::string::npos)
      << logged.str();
}

TEST(JsonEventLog, UnopenablePathThrows) {
  EXPECT_THROW(JsonEventLog("/nonexistent-dir-for-snigate-test/events.jsonl"), std::system_error);
}

// "-" is stdout; reopen is a no-op there.
TEST(JsonEventLog, StdoutReopenIsNoop) {
  JsonEventLog log("-");
  EXPECT_TRUE(log.reopen());
}

TEST(NullEventSink, AcceptsEverything) {
  tunnel::NullEventSink null;
  tunnel::EventSink& sink = null;
  sink.emit(routed_connection());
  sink.emit(tunnel::SessionStarted{});
  sink.emit(tunnel::SessionEnded{});
  sink.emit(tunnel::EndpointCreated{});
  sink.emit(tunnel::EndpointDeleted{});
}

}  // namespace
}  // namespace gw::app

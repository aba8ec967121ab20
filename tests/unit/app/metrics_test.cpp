// Tests for the Prometheus text renderer. A small exposition-format parser in the test checks
// every line's syntax, that HELP and TYPE precede each family's samples (once, unsplit), that
// every name carries the snigate_ prefix, and that histograms are cumulative and end in
// +Inf == _count. Then specific values and label escaping are checked.
#include "app/metrics.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace gw::app {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Family {
  std::string type;
  std::string help;
  std::vector<Sample> samples;
};

bool valid_name(const std::string& s) {
  static const std::regex re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  return std::regex_match(s, re);
}

bool parse_value(const std::string& s, double* out) {
  if (s == "+Inf") {
    *out = INFINITY;
    return true;
  }
  if (s == "-Inf") {
    *out = -INFINITY;
    return true;
  }
  if (s == "NaN") {
    *out = NAN;
    return true;
  }
  static const std::regex re(R"([-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?)");
  if (!std::regex_match(s, re)) {
    return false;
  }
  *out = std::stod(s);
  return true;
}

// Which family a sample belongs to: histograms own their _bucket/_sum/_count series.
std::string family_of(const std::string& sample, const std::map<std::string, Family>& families) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string sfx = suffix;
    if (sample.size() > sfx.size() &&
        sample.compare(sample.size() - sfx.size(), sfx.size(), sfx) == 0) {
      const std::string base = sample.substr(0, sample.size() - sfx.size());
      const auto it = families.find(base);
      if (it != families.end() && it->second.type == "histogram") {
        return base;
      }
    }
  }
  return sample;
}

// Parses the whole text, failing the test (with the line) on any syntax or ordering error.
void parse_exposition(const std::string& text, std::map<std::string, Family>* out) {
  auto& families = *out;
  std::set<std::string> closed;  // families whose samples are finished
  std::string current;
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    SCOPED_TRACE("line " + std::to_string(n) + ": " + line);
    EXPECT_FALSE(line.empty());
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const bool help = line[2] == 'H';
      const std::string rest = line.substr(7);
      const auto sp = rest.find(' ');
      ASSERT_NE(sp, std::string::npos);
      const std::string name = rest.substr(0, sp);
      EXPECT_TRUE(valid_name(name));
      if (name != current) {
        EXPECT_FALSE(closed.count(name)) << "family split";
        if (!current.empty()) {
          closed.insert(current);
        }
        current = name;
      }
      auto& f = families[name];
      EXPECT_TRUE(f.samples.empty()) << "HELP/TYPE after samples";
      if (help) {
        EXPECT_TRUE(f.help.empty()) << "duplicate HELP";
        f.help = rest.substr(sp + 1);
      } else {
        EXPECT_TRUE(f.type.empty()) << "duplicate TYPE";
        f.type = rest.substr(sp + 1);
        EXPECT_TRUE(f.type == "counter" || f.type == "gauge" || f.type == "histogram" ||
                    f.type == "summary" || f.type == "untyped");
      }
      continue;
    }
    EXPECT_NE(line[0], '#') << "unknown comment";
    // name{label="value",...} value
    Sample s;
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') {
      ++i;
    }
    s.name = line.substr(0, i);
    EXPECT_TRUE(valid_name(s.name));
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const auto eq = line.find('=', i);
        ASSERT_NE(eq, std::string::npos);
        const std::string lname = line.substr(i, eq - i);
        EXPECT_TRUE(valid_name(lname) && lname.find(':') == std::string::npos);
        ASSERT_LT(eq + 1, line.size());
        ASSERT_EQ(line[eq + 1], '"');
        std::string value;
        i = eq + 2;
        for (; i < line.size() && line[i] != '"'; ++i) {
          if (line[i] == '\\') {
            ASSERT_LT(i + 1, line.size());
            const char e = line[++i];
            ASSERT_TRUE(e == '\\' || e == '"' || e == 'n') << "bad escape";
            value += e == 'n' ? '\n' : e;
          } else {
            value += line[i];
          }
        }
        ASSERT_LT(i, line.size()) << "unterminated label value";
        ++i;  // closing quote
        EXPECT_FALSE(s.labels.count(lname)) << "duplicate label";
        s.labels[lname] = value;
        if (i < line.size() && line[i] == ',') {
          ++i;
        }
      }
      ASSERT_LT(i, line.size());
      ++i;  // '}'
    }
    ASSERT_LT(i, line.size());
    ASSERT_EQ(line[i], ' ');
    EXPECT_TRUE(parse_value(line.substr(i + 1), &s.value)) << "bad value";
    const std::string fam = family_of(s.name, families);
    EXPECT_EQ(fam, current) << "sample outside its family's block";
    auto it = families.find(fam);
    ASSERT_NE(it, families.end()) << "sample without HELP/TYPE";
    EXPECT_FALSE(it->second.type.empty()) << "sample without TYPE";
    EXPECT_FALSE(it->second.help.empty()) << "sample without HELP";
    it->second.samples.push_back(std::move(s));
  }
}

// Checks one histogram family: le increasing, cumulative counts, +Inf last and == _count.
void check_histogram(const std::string& name, const Family& f) {
  SCOPED_TRACE(name);
  double prev_le = -INFINITY;
  double prev_count = 0;
  double inf_count = -1;
  double count = -1;
  bool saw_sum = false;
  for (const auto& s : f.samples) {
    if (s.name == name + "_bucket") {
      ASSERT_TRUE(s.labels.count("le"));
      double le = 0;
      ASSERT_TRUE(parse_value(s.labels.at("le"), &le));
      EXPECT_GT(le, prev_le) << "le not increasing";
      EXPECT_GE(s.value, prev_count) << "buckets not cumulative";
      EXPECT_LT(inf_count, 0) << "bucket after +Inf";
      prev_le = le;
      prev_count = s.value;
      if (std::isinf(le)) {
        inf_count = s.value;
      }
    } else if (s.name == name + "_count") {
      count = s.value;
    } else if (s.name == name + "_sum") {
      saw_sum = true;
    } else {
      ADD_FAILURE() << "stray sample " << s.name;
    }
  }
  EXPECT_GE(inf_count, 0) << "no +Inf bucket";
  EXPECT_EQ(inf_count, count);
  EXPECT_TRUE(saw_sum);
}

std::map<std::string, Family> parse_and_check(const MetricsSnapshot& snap) {
  std::map<std::string, Family> families;
  parse_exposition(render_metrics(snap), &families);
  for (const auto& [name, f] : families) {
    EXPECT_EQ(name.rfind("snigate_", 0), 0u) << name;
    EXPECT_FALSE(f.type.empty()) << name;
    if (f.type == "counter") {
      EXPECT_TRUE(name.ends_with("_total")) << name;
    }
    if (f.type == "histogram") {
      check_histogram(name, f);
    }
  }
  return families;
}

double value_of(const std::map<std::string, Family>& fams, const std::string& family,
                const std::map<std::string, std::string>& labels = {},
                const std::string& series = "") {
  const auto& f = fams.at(family);
  for (const auto& s : f.samples) {
    if ((series.empty() ? s.name == family : s.name == series) && s.labels == labels) {
      return s.value;
    }
  }
  ADD_FAILURE() << "no sample " << family << " " << series;
  return -1;
}

MetricsSnapshot busy_snapshot() {
  MetricsSnapshot s;
  s.connections_accepted = 120;
  s.connections_refused = {{"no_route", 7}, {"timeout", 2}, {"cidr_denied", 1}};
  s.connections_routed = 110;
  s.connections_active = 3;
  s.connections_pending = 9;
  s.pending_hello_bytes = 81920;
  s.admin_refused = {{"unauthorized", 12}, {"bad_host", 3}, {"limit", 40}, {"timeout", 4}};
  s.admin_connections_unauthorized = 16;
  s.admin_connections_authorized = 2;
  s.bytes_in = 1 << 20;
  s.bytes_out = 12345678901ULL;
  s.endpoints = 4;
  s.sessions = 2;
  s.sessions_unauthenticated = 1;
  s.sessions_refused = 11;
  s.auth_failures = 5;
  s.forwards_refused = 6;
  s.direct_refused = 14;
  s.tls_port_ssh = 15;
  s.channel_open_failures = 8;
  s.events_dropped = 13;
  LatencyHistogram hello(kLatencyBuckets);
  hello.observe(0.0004);
  hello.observe(0.02);
  hello.observe(3.0);
  hello.observe(60.0);
  s.client_hello_wait = hello.snapshot();
  LatencyHistogram open(kLatencyBuckets);
  open.observe(0.004);
  s.channel_open_latency = open.snapshot();
  s.version = "0.1.0";
  return s;
}

// Every family is well-formed and the values are the snapshot's.
TEST(Metrics, BusySnapshotRendersValidText) {
  const auto fams = parse_and_check(busy_snapshot());
  EXPECT_EQ(value_of(fams, "snigate_connections_accepted_total"), 120);
  EXPECT_EQ(value_of(fams, "snigate_connections_refused_total", {{"reason", "no_route"}}), 7);
  EXPECT_EQ(value_of(fams, "snigate_connections_refused_total", {{"reason", "timeout"}}), 2);
  EXPECT_EQ(value_of(fams, "snigate_connections_refused_total", {{"reason", "cidr_denied"}}), 1);
  EXPECT_EQ(value_of(fams, "snigate_connections_routed_total"), 110);
  EXPECT_EQ(value_of(fams, "snigate_connections_active"), 3);
  EXPECT_EQ(fams.at("snigate_connections_active").type, "gauge");
  EXPECT_EQ(value_of(fams, "snigate_connections_pending"), 9);
  EXPECT_EQ(fams.at("snigate_connections_pending").type, "gauge");
  EXPECT_EQ(value_of(fams, "snigate_pending_hello_bytes"), 81920);
  EXPECT_EQ(fams.at("snigate_pending_hello_bytes").type, "gauge");
  EXPECT_EQ(value_of(fams, "snigate_admin_refused_total", {{"reason", "unauthorized"}}), 12);
  EXPECT_EQ(value_of(fams, "snigate_admin_refused_total", {{"reason", "bad_host"}}), 3);
  EXPECT_EQ(value_of(fams, "snigate_admin_refused_total", {{"reason", "limit"}}), 40);
  EXPECT_EQ(value_of(fams, "snigate_admin_refused_total", {{"reason", "timeout"}}), 4);
  EXPECT_EQ(fams.at("snigate_admin_refused_total").type, "counter");
  EXPECT_EQ(value_of(fams, "snigate_admin_connections", {{"state", "unauthorized"}}), 16);
  EXPECT_EQ(value_of(fams, "snigate_admin_connections", {{"state", "authorized"}}), 2);
  EXPECT_EQ(fams.at("snigate_admin_connections").type, "gauge");
  EXPECT_EQ(value_of(fams, "snigate_bytes_in_total"), 1 << 20);
  EXPECT_EQ(value_of(fams, "snigate_bytes_out_total"), 12345678901.0);
  EXPECT_EQ(value_of(fams, "snigate_endpoints"), 4);
  EXPECT_EQ(value_of(fams, "snigate_sessions"), 2);
  EXPECT_EQ(value_of(fams, "snigate_sessions_unauthenticated"), 1);
  EXPECT_EQ(value_of(fams, "snigate_sessions_refused_total"), 11);
  EXPECT_EQ(value_of(fams, "snigate_auth_failures_total"), 5);
  EXPECT_EQ(value_of(fams, "snigate_forwards_refused_total"), 6);
  EXPECT_EQ(value_of(fams, "snigate_direct_refused_total"), 14);
  EXPECT_EQ(value_of(fams, "snigate_tls_port_ssh_total"), 15);
  EXPECT_EQ(value_of(fams, "snigate_channel_open_failures_total"), 8);
  EXPECT_EQ(value_of(fams, "snigate_events_dropped_total"), 13);
  EXPECT_EQ(value_of(fams, "snigate_build_info", {{"version", "0.1.0"}}), 1);

  const std::string h = "snigate_client_hello_wait_seconds";
  EXPECT_EQ(fams.at(h).type, "histogram");
  EXPECT_EQ(value_of(fams, h, {{"le", "0.001"}}, h + "_bucket"), 1);
  EXPECT_EQ(value_of(fams, h, {{"le", "0.025"}}, h + "_bucket"), 2);
  EXPECT_EQ(value_of(fams, h, {{"le", "5"}}, h + "_bucket"), 3);
  EXPECT_EQ(value_of(fams, h, {{"le", "+Inf"}}, h + "_bucket"), 4);
  EXPECT_EQ(value_of(fams, h, {}, h + "_count"), 4);
  EXPECT_NEAR(value_of(fams, h, {}, h + "_sum"), 63.0204, 1e-6);
  const std::string c = "snigate_channel_open_seconds";
  EXPECT_EQ(value_of(fams, c, {{"le", "0.005"}}, c + "_bucket"), 1);
  EXPECT_EQ(value_of(fams, c, {}, c + "_count"), 1);
}

// A zero snapshot (start-up) is still valid text: every family present, empty histograms
// render a lone +Inf bucket of 0.
TEST(Metrics, EmptySnapshotRendersValidText) {
  const auto fams = parse_and_check(MetricsSnapshot{});
  EXPECT_EQ(value_of(fams, "snigate_connections_accepted_total"), 0);
  EXPECT_TRUE(fams.at("snigate_connections_refused_total").samples.empty());
  EXPECT_FALSE(fams.count("snigate_build_info"));
  const std::string h = "snigate_channel_open_seconds";
  EXPECT_EQ(value_of(fams, h, {{"le", "+Inf"}}, h + "_bucket"), 0);
}

// Label values with backslash, quote and newline are escaped and parse back exactly.
TEST(Metrics, LabelValuesAreEscaped) {
  EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  MetricsSnapshot s;
  s.connections_refused = {{"we\"ird\\re\nason", 1}};
  s.version = "1.0\"x";
  const auto fams = parse_and_check(s);
  EXPECT_EQ(value_of(fams, "snigate_connections_refused_total", {{"reason", "we\"ird\\re\nason"}}),
            1);
  EXPECT_EQ(value_of(fams, "snigate_build_info", {{"version", "1.0\"x"}}), 1);
}

// le values use the shortest exact decimal, as Prometheus clients print them.
TEST(Metrics, BucketBoundsFormatting) {
  MetricsSnapshot s;
  s.client_hello_wait.bounds = {1e-9, 0.0025, 0.1, 1, 2.5};
  s.client_hello_wait.counts = {0, 0, 0, 0, 0};
  const std::string text = render_metrics(s);
  for (const char* le : {"le=\"0.0025\"", "le=\"0.1\"", "le=\"1\"", "le=\"2.5\"", "le=\"1e-09\""}) {
    EXPECT_NE(text.find(le), std::string::npos) << le;
  }
}

}  // namespace
}  // namespace gw::app

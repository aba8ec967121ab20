#include "cluster/registry_codec.hpp"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <charconv>

#include "tunnel/hostname.hpp"

namespace gw::cluster {
namespace json = boost::json;
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// An int64 as the gateway writes it (a decimal string; grpc-gateway's int64 encoding) or as a
/// plain JSON number; absent means 0 (proto3 omits defaults).
bool get_int(const json::object& o, std::string_view name, std::int64_t& out) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr) {
    out = 0;
    return true;
  }
  if (v->is_int64()) {
    out = v->get_int64();
    return true;
  }
  if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
    out = static_cast<std::int64_t>(v->get_uint64());
    return true;
  }
  if (v->is_string()) {
    const json::string& s = v->get_string();
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && end == s.data() + s.size() && !s.empty();
  }
  return false;
}

bool get_bool(const json::object& o, std::string_view name) {
  const json::value* v = o.if_contains(name);
  return v != nullptr && v->is_bool() && v->get_bool();
}

/// A string member; absent is "" (proto3), another type is an error.
bool get_string(const json::object& o, std::string_view name, std::string& out) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr) {
    out.clear();
    return true;
  }
  if (!v->is_string()) {
    return false;
  }
  out.assign(v->get_string().data(), v->get_string().size());
  return true;
}

bool get_b64(const json::object& o, std::string_view name, std::string& out) {
  std::string text;
  if (!get_string(o, name, text)) {
    return false;
  }
  auto decoded = base64_decode(text);
  if (!decoded) {
    return false;
  }
  out = std::move(*decoded);
  return true;
}

std::optional<json::object> parse_object(std::string_view text, std::string& error) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) {
    error = "not JSON: " + ec.message();
    return std::nullopt;
  }
  if (!v.is_object()) {
    error = "not a JSON object";
    return std::nullopt;
  }
  return std::move(v.get_object());
}

/// The gateway's error object ({"error":"...","code":N,"message":"..."}), as one line.
std::string gateway_error(const json::object& o) {
  std::string message;
  if (const json::value* e = o.if_contains("error")) {
    if (e->is_string()) {
      message.assign(e->get_string().begin(), e->get_string().end());
    } else if (e->is_object()) {
      get_string(e->get_object(), "message", message);
    }
    return message.empty() ? "etcd error" : message;
  }
  if (const json::value* m = o.if_contains("message");
      m != nullptr && m->is_string() && o.contains("code")) {
    return std::string(m->get_string());
  }
  return {};
}

std::int64_t header_revision(const json::object& o) {
  std::int64_t rev = 0;
  if (const json::value* h = o.if_contains("header"); h != nullptr && h->is_object()) {
    get_int(h->get_object(), "revision", rev);
  }
  return rev;
}

std::optional<KeyValue> parse_kv(const json::value& v) {
  if (!v.is_object()) {
    return std::nullopt;
  }
  const json::object& o = v.get_object();
  KeyValue kv;
  if (!get_b64(o, "key", kv.key) || !get_b64(o, "value", kv.value) ||
      !get_int(o, "create_revision", kv.create_revision) ||
      !get_int(o, "mod_revision", kv.mod_revision) || !get_int(o, "lease", kv.lease) ||
      kv.key.empty()) {
    return std::nullopt;
  }
  return kv;
}

// "<number>.<boot>": a key component, never a DNS name.
bool valid_session_id(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::ranges::all_of(s, [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

std::string json_text(const json::value& v) { return json::serialize(v); }

}  // namespace

std::vector<EtcdEndpoint> parse_etcd_endpoints(std::string_view text, std::string& why) {
  std::vector<EtcdEndpoint> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    std::string_view item = text.substr(start, comma - start);
    start = comma + 1;
    while (!item.empty() && item.front() == ' ') {
      item.remove_prefix(1);
    }
    while (!item.empty() && item.back() == ' ') {
      item.remove_suffix(1);
    }
    if (!item.starts_with("http://")) {
      why =
          "expected http://HOST:PORT (https is not supported: keep etcd on a private "
          "network), got \"" +
          std::string(item.substr(0, 100)) + "\"";
      return {};
    }
    item.remove_prefix(7);
    if (item.ends_with('/')) {
      item.remove_suffix(1);
    }
    const std::size_t colon = item.rfind(':');
    std::uint16_t port = 0;
    const char* pend = item.data() + item.size();
    if (colon == std::string_view::npos || colon == 0 ||
        std::from_chars(item.data() + colon + 1, pend, port).ptr != pend || port == 0) {
      why = "expected http://HOST:PORT with a port from 1 to 65535, got \"http://" +
            std::string(item.substr(0, 100)) + "\"";
      return {};
    }
    std::string host(item.substr(0, colon));
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    out.push_back(EtcdEndpoint{std::move(host), port});
    if (comma == text.size()) {
      break;
    }
  }
  if (out.empty()) {
    why = "expected http://HOST:PORT[,http://HOST:PORT...]";
  }
  return out;
}

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t n = static_cast<unsigned char>(bytes[i]) << 16 |
                            static_cast<unsigned char>(bytes[i + 1]) << 8 |
                            static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[n >> 18 & 63];
    out += kAlphabet[n >> 12 & 63];
    out += kAlphabet[n >> 6 & 63];
    out += kAlphabet[n & 63];
  }
  if (const std::size_t rest = bytes.size() - i; rest > 0) {
    std::uint32_t n = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) {
      n |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    }
    out += kAlphabet[n >> 18 & 63];
    out += kAlphabet[n >> 12 & 63];
    out += rest == 2 ? kAlphabet[n >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return std::nullopt;
  }
  std::array<int, 256> table{};
  table.fill(-1);
  for (std::size_t i = 0; i < kAlphabet.size(); ++i) {
    table[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int>(i);
  }
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int pad = 0;
    std::uint32_t n = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=' && last && j >= 2) {
        ++pad;
        n <<= 6;
        continue;
      }
      const int d = table[static_cast<unsigned char>(c)];
      if (d < 0 || pad > 0) {
        return std::nullopt;
      }
      n = n << 6 | static_cast<std::uint32_t>(d);
    }
    // Bits the padding drops must be zero: only the canonical spelling of each value decodes.
    if ((pad == 1 && (n & 0xff) != 0) || (pad == 2 && (n & 0xffff) != 0)) {
      return std::nullopt;
    }
    out += static_cast<char>(n >> 16 & 0xff);
    if (pad < 2) {
      out += static_cast<char>(n >> 8 & 0xff);
    }
    if (pad < 1) {
      out += static_cast<char>(n & 0xff);
    }
  }
  return out;
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // etcd: "\0" as range_end means every key from `key` on
}

std::string session_component(std::uint64_t session, std::string_view boot) {
  return std::to_string(session) + "." + std::string(boot);
}

std::optional<std::uint64_t> session_number(std::string_view component) {
  // A stale boot's number that now belongs to another session still reaches only a session
  // holding that very name (the relay listener checks the holder).
  const std::string_view id = component.substr(0, component.find('.'));
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), v);
  if (ec != std::errc{} || end != id.data() + id.size() || v == 0) {
    return std::nullopt;
  }
  return v;
}

bool valid_node_id(std::string_view id) {
  // A DNS name (RFC 1123 labels): the relay's peer certificate must name it in a SAN DNS entry,
  // and a '_' or an empty label is no valid DNS name, so such a node could never be relayed to.
  if (id.empty() || id.size() > 64) {
    return false;
  }
  std::size_t start = 0;
  while (start <= id.size()) {
    const std::size_t dot = std::min(id.find('.', start), id.size());
    const std::string_view label = id.substr(start, dot - start);
    if (label.empty() || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (const char c : label) {
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-')) {
        return false;
      }
    }
    start = dot + 1;
  }
  return true;
}

std::string node_key(std::string_view node_id) { return nodes_prefix() + std::string(node_id); }
std::string nodes_prefix() { return std::string(kKeyPrefix) + "nodes/"; }
std::string routes_prefix() { return std::string(kKeyPrefix) + "routes/"; }
std::string host_prefix(std::string_view host) { return routes_prefix() + std::string(host) + "/"; }
std::string single_prefix(std::string_view host) { return host_prefix(host) + "single/"; }

std::string route_key(const RouteKey& k) {
  return host_prefix(k.host) + (k.kind == RouteKind::pool ? "pool/" : "single/") + k.node + "/" +
         k.session;
}

std::optional<RouteKey> parse_route_key(std::string_view key) {
  const std::string prefix = routes_prefix();
  if (!key.starts_with(prefix)) {
    return std::nullopt;
  }
  std::string_view rest = key.substr(prefix.size());
  std::array<std::string_view, 4> parts;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::size_t slash = rest.find('/');
    if (i + 1 < parts.size()) {
      if (slash == std::string_view::npos) {
        return std::nullopt;
      }
      parts[i] = rest.substr(0, slash);
      rest = rest.substr(slash + 1);
    } else {
      if (slash != std::string_view::npos) {
        return std::nullopt;
      }
      parts[i] = rest;
    }
  }
  RouteKey k;
  // The host must be what Hostname::parse makes of it: a key another writer spelled
  // differently (upper case, a trailing dot) would route past the precedence rules.
  const auto host = tunnel::Hostname::parse(parts[0], true);
  if (!host || host->str() != parts[0]) {
    return std::nullopt;
  }
  k.host = host->str();
  if (parts[1] == "single") {
    k.kind = RouteKind::single;
  } else if (parts[1] == "pool") {
    k.kind = RouteKind::pool;
  } else {
    return std::nullopt;
  }
  if (!valid_node_id(parts[2]) || !valid_session_id(parts[3])) {
    return std::nullopt;
  }
  k.node = parts[2];
  k.session = parts[3];
  return k;
}

std::optional<std::string> parse_node_key(std::string_view key) {
  const std::string prefix = nodes_prefix();
  if (!key.starts_with(prefix) || !valid_node_id(key.substr(prefix.size()))) {
    return std::nullopt;
  }
  return std::string(key.substr(prefix.size()));
}

std::string encode_route_value(const RouteValue& v) {
  json::object o;
  o["fpr"] = v.fpr;
  o["group"] = v.group;
  o["opened"] = v.opened;
  if (v.internal) {
    o["internal"] = true;
  }
  return json_text(o);
}

std::optional<RouteValue> parse_route_value(std::string_view text) {
  std::string error;
  const auto o = parse_object(text, error);
  if (!o) {
    return std::nullopt;
  }
  RouteValue v;
  if (!get_string(*o, "fpr", v.fpr) || !get_string(*o, "group", v.group) ||
      !get_int(*o, "opened", v.opened) || v.fpr.empty() || v.fpr.size() > 128 ||
      v.group.size() > 128) {
    return std::nullopt;
  }
  v.internal = get_bool(*o, "internal");
  return v;
}

std::string encode_node_value(const NodeValue& v) {
  json::object o;
  o["relay"] = v.relay;
  o["boot"] = v.boot;
  o["version"] = v.version;
  return json_text(o);
}

std::optional<NodeValue> parse_node_value(std::string_view text) {
  std::string error;
  const auto o = parse_object(text, error);
  if (!o) {
    return std::nullopt;
  }
  NodeValue v;
  if (!get_string(*o, "relay", v.relay) || !get_string(*o, "boot", v.boot) ||
      !get_string(*o, "version", v.version) || v.relay.size() > 300 || v.boot.size() > 64 ||
      v.version.size() > 64) {
    return std::nullopt;
  }
  return v;
}

RangeResult parse_range_response(std::string_view text) {
  RangeResult r;
  const auto o = parse_object(text, r.error);
  if (!o) {
    return r;
  }
  if (r.error = gateway_error(*o); !r.error.empty()) {
    return r;
  }
  r.revision = header_revision(*o);
  if (const json::value* kvs = o->if_contains("kvs")) {
    if (!kvs->is_array()) {
      r.error = "kvs is not an array";
      return r;
    }
    for (const json::value& v : kvs->get_array()) {
      if (auto kv = parse_kv(v)) {
        r.kvs.push_back(std::move(*kv));
      } else {
        ++r.skipped;
      }
    }
  }
  return r;
}

TxnResult parse_txn_response(std::string_view text) {
  TxnResult r;
  const auto o = parse_object(text, r.error);
  if (!o) {
    return r;
  }
  if (r.error = gateway_error(*o); !r.error.empty()) {
    return r;
  }
  r.revision = header_revision(*o);
  r.succeeded = get_bool(*o, "succeeded");
  return r;
}

LeaseResult parse_lease_response(std::string_view text) {
  LeaseResult r;
  auto o = parse_object(text, r.error);
  if (!o) {
    return r;
  }
  if (r.error = gateway_error(*o); !r.error.empty()) {
    return r;
  }
  const json::object* body = &*o;
  if (const json::value* res = o->if_contains("result")) {
    if (!res->is_object()) {
      r.error = "result is not an object";
      return r;
    }
    body = &res->get_object();
  }
  if (!get_int(*body, "ID", r.id) || !get_int(*body, "TTL", r.ttl)) {
    r.error = "ID or TTL is not a number";
  }
  if (std::string e; get_string(*body, "error", e) && !e.empty()) {
    r.error = e;
  }
  return r;
}

WatchParse parse_watch_message(std::string_view text) {
  WatchParse p;
  const auto o = parse_object(text, p.error);
  if (!o) {
    return p;
  }
  const json::value* res = o->if_contains("result");
  if (res == nullptr || !res->is_object()) {
    p.error = gateway_error(*o);
    if (p.error.empty()) {
      p.error = "no result in a watch message";
    }
    return p;
  }
  const json::object& r = res->get_object();
  WatchMessage m;
  m.revision = header_revision(r);
  m.created = get_bool(r, "created");
  m.canceled = get_bool(r, "canceled");
  if (!get_int(r, "compact_revision", m.compact_revision)) {
    p.error = "compact_revision is not a number";
    return p;
  }
  get_string(r, "cancel_reason", m.error);
  if (const json::value* events = r.if_contains("events")) {
    if (!events->is_array()) {
      p.error = "events is not an array";
      return p;
    }
    for (const json::value& ev : events->get_array()) {
      if (!ev.is_object()) {
        ++p.skipped;
        continue;
      }
      const json::object& e = ev.get_object();
      const json::value* kv = e.if_contains("kv");
      std::string type;
      auto parsed = kv != nullptr ? parse_kv(*kv) : std::nullopt;
      if (!parsed || !get_string(e, "type", type) ||
          (!type.empty() && type != "PUT" && type != "DELETE")) {
        ++p.skipped;
        continue;
      }
      m.events.push_back(WatchEvent{type == "DELETE", std::move(*parsed)});
    }
  }
  p.message = std::move(m);
  return p;
}

std::string range_request(std::string_view key, std::string_view range_end) {
  json::object o;
  o["key"] = base64_encode(key);
  if (!range_end.empty()) {
    o["range_end"] = base64_encode(range_end);
  }
  return json_text(o);
}

std::string put_op(std::string_view key, std::string_view value, std::int64_t lease) {
  json::object put;
  put["key"] = base64_encode(key);
  put["value"] = base64_encode(value);
  if (lease != 0) {
    put["lease"] = std::to_string(lease);
  }
  json::object o;
  o["request_put"] = std::move(put);
  return json_text(o);
}

std::string delete_op(std::string_view key) {
  json::object del;
  del["key"] = base64_encode(key);
  json::object o;
  o["request_delete_range"] = std::move(del);
  return json_text(o);
}

std::string compare_create(std::string_view key, std::string_view range_end, std::int64_t value) {
  json::object o;
  o["key"] = base64_encode(key);
  if (!range_end.empty()) {
    o["range_end"] = base64_encode(range_end);
  }
  o["target"] = "CREATE";
  o["result"] = "EQUAL";
  o["create_revision"] = std::to_string(value);
  return json_text(o);
}

std::string compare_mod(std::string_view key, std::int64_t value) {
  json::object o;
  o["key"] = base64_encode(key);
  o["target"] = "MOD";
  o["result"] = "EQUAL";
  o["mod_revision"] = std::to_string(value);
  return json_text(o);
}

std::string compare_unchanged_since(std::string_view key, std::string_view range_end,
                                    std::int64_t value) {
  json::object o;
  o["key"] = base64_encode(key);
  o["range_end"] = base64_encode(range_end);
  o["target"] = "MOD";
  o["result"] = "LESS";
  o["mod_revision"] = std::to_string(value);
  return json_text(o);
}

std::string txn_request(const std::vector<std::string>& compares,
                        const std::vector<std::string>& success) {
  std::string out = "{\"compare\":[";
  for (std::size_t i = 0; i < compares.size(); ++i) {
    out += (i == 0 ? "" : ",") + compares[i];
  }
  out += "],\"success\":[";
  for (std::size_t i = 0; i < success.size(); ++i) {
    out += (i == 0 ? "" : ",") + success[i];
  }
  return out + "]}";
}

std::string watch_request(std::string_view key, std::string_view range_end,
                          std::int64_t start_revision) {
  json::object create;
  create["key"] = base64_encode(key);
  create["range_end"] = base64_encode(range_end);
  if (start_revision > 0) {
    create["start_revision"] = std::to_string(start_revision);
  }
  json::object o;
  o["create_request"] = std::move(create);
  return json_text(o);
}

}  // namespace gw::cluster

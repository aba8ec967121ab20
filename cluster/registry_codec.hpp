// The cluster registry's data as etcd holds it: the key layout of CLUSTER.md, the JSON values
// under those keys, and the etcd v3 JSON gateway's answers (range, txn, lease, watch stream),
// with base64 for keys and values. Pure: no I/O, no clock. Everything read from etcd is
// untrusted input: a value that does not parse is an error the caller logs and skips, never a
// crash (fuzz_cluster_codec feeds this file random bytes). Deliberately not here: the HTTP
// transport (etcd_client.*), the cache (route_cache.*), decisions (registry.*).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gw::cluster {

struct EtcdEndpoint {
  std::string host;
  std::uint16_t port = 0;
  std::string text() const { return host + ":" + std::to_string(port); }
};

/// Parses `http://HOST:PORT[,http://HOST:PORT...]` (--cluster-etcd); on failure returns an
/// empty list and `why` says what is wrong.
std::vector<EtcdEndpoint> parse_etcd_endpoints(std::string_view text, std::string& why);

/// Every key snigate writes starts here; the version lets a future layout live beside it.
inline constexpr std::string_view kKeyPrefix = "/snigate/v1/";

std::string base64_encode(std::string_view bytes);
/// nullopt when `text` is not canonical-enough base64 (bad characters or length).
std::optional<std::string> base64_decode(std::string_view text);
/// The end of etcd's prefix range for `prefix` (its last byte incremented): range_end.
std::string prefix_end(std::string_view prefix);

/// A node id: a DNS name of at most 64 characters, dot-separated labels of [A-Za-z0-9-] not
/// starting or ending with '-' (it is a key component and the relay certificate's SAN DNS).
bool valid_node_id(std::string_view id);

enum class RouteKind { single, pool };

/// routes/<host>/<kind>/<node-id>/<session-id>, parsed.
struct RouteKey {
  std::string host;  ///< normalised, exact or "*.suffix"
  RouteKind kind = RouteKind::single;
  std::string node;
  std::string session;
};

/// A route key's session component: "<session>.<boot nonce>". The nonce keeps a restarted
/// node's keys apart from its predecessor's, which may outlive it by a TTL.
std::string session_component(std::uint64_t session, std::string_view boot);
/// The session number of a session component (the relay's route TLV carries one), or nullopt.
std::optional<std::uint64_t> session_number(std::string_view component);

std::string node_key(std::string_view node_id);
std::string nodes_prefix();
std::string routes_prefix();
/// routes/<host>/: every holder of one name.
std::string host_prefix(std::string_view host);
/// routes/<host>/single/: the single holders of one name.
std::string single_prefix(std::string_view host);
std::string route_key(const RouteKey& k);
/// nullopt unless `key` is exactly a route key with a valid host, kind, node and session.
std::optional<RouteKey> parse_route_key(std::string_view key);
/// The node id of a nodes/<id> key, or nullopt.
std::optional<std::string> parse_node_key(std::string_view key);

/// The value of a route key.
struct RouteValue {
  std::string fpr;          ///< the holder key's fingerprint "SHA256:..."
  std::string group;        ///< tunnel::ClaimRequest::pool_group
  std::int64_t opened = 0;  ///< unix milliseconds
  /// An internal endpoint: ingress nodes refuse it on the public port and relay only teammates'
  /// ssh -L / -W to it. Absent in a value means false.
  bool internal = false;
};
std::string encode_route_value(const RouteValue& v);
std::optional<RouteValue> parse_route_value(std::string_view json);

/// The value of a node key.
struct NodeValue {
  std::string relay;  ///< HOST:PORT other nodes relay to ("" when the node has none)
  std::string boot;   ///< a nonce per process start
  std::string version;
};
std::string encode_node_value(const NodeValue& v);
std::optional<NodeValue> parse_node_value(std::string_view json);

/// One mvccpb.KeyValue, keys and values decoded.
struct KeyValue {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t lease = 0;
};

struct WatchEvent {
  bool deleted = false;
  KeyValue kv;
};

/// One object of the /v3/watch stream ({"result":{...}} or {"error":{...}}).
struct WatchMessage {
  std::int64_t revision = 0;  ///< header.revision
  bool created = false;
  bool canceled = false;
  std::int64_t compact_revision = 0;  ///< set when the start revision was compacted away
  std::vector<WatchEvent> events;
  std::string error;  ///< the gateway's error message, or cancel_reason
};

/// The parse of etcd's answers. `error` is set (and nothing else trusted) when the text is not
/// the expected JSON; a single bad key-value inside a good answer is skipped and counted.
struct RangeResult {
  std::int64_t revision = 0;
  std::vector<KeyValue> kvs;
  std::size_t skipped = 0;
  std::string error;
};
RangeResult parse_range_response(std::string_view json);

struct TxnResult {
  std::int64_t revision = 0;
  bool succeeded = false;
  std::string error;
};
TxnResult parse_txn_response(std::string_view json);

struct LeaseResult {
  std::int64_t id = 0;
  std::int64_t ttl = 0;  ///< 0 on a keepalive: the lease is unknown to etcd (lost)
  std::string error;
};
/// A lease/grant answer or one lease/keepalive answer ({"result":{...}}).
LeaseResult parse_lease_response(std::string_view json);

struct WatchParse {
  std::optional<WatchMessage> message;
  std::size_t skipped = 0;  ///< events whose key-value did not parse
  std::string error;
};
WatchParse parse_watch_message(std::string_view json);

// Request bodies, as JSON text.
std::string range_request(std::string_view key, std::string_view range_end);
std::string put_op(std::string_view key, std::string_view value, std::int64_t lease);
std::string delete_op(std::string_view key);
/// compare `key` (with `range_end`, every key of the range) on CREATE == value.
std::string compare_create(std::string_view key, std::string_view range_end, std::int64_t value);
/// compare `key` on MOD == value.
std::string compare_mod(std::string_view key, std::int64_t value);
/// compare every key of [key, range_end) on MOD < value: nothing in the range was put after
/// revision value - 1 (an empty range passes).
std::string compare_unchanged_since(std::string_view key, std::string_view range_end,
                                    std::int64_t value);
/// A txn from JSON fragments (compare_*, put_op/delete_op).
std::string txn_request(const std::vector<std::string>& compares,
                        const std::vector<std::string>& success);
std::string watch_request(std::string_view key, std::string_view range_end,
                          std::int64_t start_revision);

}  // namespace gw::cluster

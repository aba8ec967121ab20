// libFuzzer: everything a node reads from etcd (cluster/registry_codec.*, route_cache.*): watch
// messages and range answers applied to a RouteCache, route and node values, keys, base64 and
// --cluster-etcd lists. Bad input must be skipped, never crash or trip a sanitizer.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cluster/registry_codec.hpp"
#include "cluster/route_cache.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace gw::cluster;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  RouteCache cache("n1");
  const RangeResult range = parse_range_response(text);
  cache.reset(range.kvs, range.revision);
  const WatchParse watch = parse_watch_message(text);
  if (watch.message) {
    std::vector<CacheChange> changes;
    cache.apply(*watch.message, &changes);
    for (const auto& h : cache.all_holders()) {
      cache.find_remote(h.key.host);
      cache.nesting(h.key.host, h.value.fpr);
      cache.probe_remote(h.key.host, "x");
    }
    cache.remote_usage("x");
  }
  parse_route_value(text);
  parse_node_value(text);
  parse_txn_response(text);
  parse_lease_response(text);
  parse_route_key(text);
  parse_node_key(text);
  if (const auto decoded = base64_decode(text)) {
    if (base64_encode(*decoded) != text) {
      __builtin_trap();  // what decodes must encode back to the same text
    }
  }
  std::string why;
  parse_etcd_endpoints(text, why);
  return 0;
}

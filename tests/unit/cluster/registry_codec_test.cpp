// The registry's key layout, values and etcd's JSON answers (cluster/registry_codec.*): what the
// node writes reads back, and what does not parse is refused, never trusted.
#include "cluster/registry_codec.hpp"

#include <gtest/gtest.h>

namespace gw::cluster {
namespace {

TEST(Base64, RoundTripsEveryLength) {
  const std::string bytes = std::string("\0\xff\x10 abc/\xfe", 10);
  for (std::size_t n = 0; n <= bytes.size(); ++n) {
    const std::string in = bytes.substr(0, n);
    const auto out = base64_decode(base64_encode(in));
    ASSERT_TRUE(out) << n;
    EXPECT_EQ(*out, in) << n;
  }
  EXPECT_EQ(base64_encode("/snigate/v1/nodes/a"), "L3NuaWdhdGUvdjEvbm9kZXMvYQ==");
}

TEST(Base64, RefusesBadText) {
  for (const char* bad : {"a", "abc", "ab=c", "a===", "ab!d", "=abc", "ab==cd==", "ttp=", "YR=="}) {
    EXPECT_FALSE(base64_decode(bad)) << bad;
  }
}

TEST(Keys, LayoutOfClusterMd) {
  EXPECT_EQ(node_key("n1"), "/snigate/v1/nodes/n1");
  const RouteKey k{"*.alice.test", RouteKind::pool, "n2", "17.ab12"};
  EXPECT_EQ(route_key(k), "/snigate/v1/routes/*.alice.test/pool/n2/17.ab12");
  EXPECT_EQ(host_prefix("a.test"), "/snigate/v1/routes/a.test/");
  EXPECT_EQ(single_prefix("a.test"), "/snigate/v1/routes/a.test/single/");
  EXPECT_EQ(prefix_end("/snigate/v1/"), "/snigate/v10");
  EXPECT_EQ(prefix_end(std::string("a\xff", 2)), "b");
}

TEST(Keys, RouteKeyParsesBack) {
  const RouteKey k{"app.alice.test", RouteKind::single, "n1", "3.ff00"};
  const auto back = parse_route_key(route_key(k));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->host, k.host);
  EXPECT_EQ(back->kind, RouteKind::single);
  EXPECT_EQ(back->node, "n1");
  EXPECT_EQ(back->session, "3.ff00");
  EXPECT_EQ(parse_node_key("/snigate/v1/nodes/n-1.b-c"), "n-1.b-c");
}

TEST(Keys, RefusesWhatIsNotARouteKey) {
  for (const char* bad : {
           "/snigate/v1/routes/a.test/single/n1",          // no session
           "/snigate/v1/routes/a.test/single/n1/s/extra",  // too deep
           "/snigate/v1/routes/a.test/other/n1/s",         // kind
           "/snigate/v1/routes/A.test/single/n1/s",        // not normalised
           "/snigate/v1/routes/a.test./single/n1/s",       // trailing dot
           "/snigate/v1/routes/10.0.0.1/single/n1/s",      // IP literal
           "/snigate/v1/routes/a.test/single/n 1/s",       // node id
           "/snigate/v1/routes/a.test/single//s",          // empty node
           "/snigate/v2/routes/a.test/single/n1/s",        // other version
       }) {
    EXPECT_FALSE(parse_route_key(bad)) << bad;
  }
  EXPECT_FALSE(parse_node_key("/snigate/v1/nodes/"));
  EXPECT_FALSE(parse_node_key("/snigate/v1/nodes/a/b"));
}

TEST(NodeId, Syntax) {
  EXPECT_TRUE(valid_node_id("node-1.eu-west"));
  EXPECT_TRUE(valid_node_id("n1"));
  EXPECT_FALSE(valid_node_id("node_1"));  // no DNS name: no certificate could name it
  EXPECT_FALSE(valid_node_id("-n1"));
  EXPECT_FALSE(valid_node_id("n1-"));
  EXPECT_FALSE(valid_node_id("a..b"));
  EXPECT_FALSE(valid_node_id(".a"));
  EXPECT_FALSE(valid_node_id("a."));
  EXPECT_FALSE(valid_node_id(""));
  EXPECT_FALSE(valid_node_id("a/b"));
  EXPECT_FALSE(valid_node_id(std::string(65, 'a')));
}

TEST(Values, RouteAndNodeRoundTrip) {
  const RouteValue r{"SHA256:abc", "grp", 1700000000123};
  const auto back = parse_route_value(encode_route_value(r));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->fpr, r.fpr);
  EXPECT_EQ(back->group, r.group);
  EXPECT_EQ(back->opened, r.opened);
  EXPECT_FALSE(back->internal);  // a value without the field (as older nodes write) is public
  const auto internal = parse_route_value(encode_route_value({"SHA256:abc", "", 1, true}));
  ASSERT_TRUE(internal);
  EXPECT_TRUE(internal->internal);
  const NodeValue n{"10.0.0.5:9444", "beef", "0.1.0"};
  const auto node = parse_node_value(encode_node_value(n));
  ASSERT_TRUE(node);
  EXPECT_EQ(node->relay, n.relay);
  EXPECT_EQ(node->boot, n.boot);
}

TEST(Values, BadOnesAreRefused) {
  for (const char* bad :
       {"", "{", "[]", "{\"fpr\":1}", "{\"group\":\"g\"}", "{\"fpr\":\"\"}",
        "{\"fpr\":\"x\",\"opened\":\"soon\"}", "{\"fpr\":\"x\",\"opened\":1.5}"}) {
    EXPECT_FALSE(parse_route_value(bad)) << bad;
  }
  EXPECT_FALSE(parse_node_value("{\"relay\":7}"));
  EXPECT_TRUE(parse_route_value("{\"fpr\":\"x\",\"opened\":\"12\",\"extra\":[1]}"));
}

TEST(Answers, RangeSkipsBadKeyValues) {
  // As etcd 3.4's gateway writes it: int64 as strings, defaults omitted.
  const std::string text =
      R"({"header":{"revision":"42"},"kvs":[)"
      R"({"key":"L3NuaWdhdGUvdjEvbm9kZXMvYQ==","create_revision":"5","mod_revision":"7","value":"e30=","lease":"99"},)"
      R"({"key":"!!!","value":"e30="},)"
      R"({"key":"YQ==","mod_revision":{}}],"count":"3"})";
  const RangeResult r = parse_range_response(text);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.revision, 42);
  ASSERT_EQ(r.kvs.size(), 1u);
  EXPECT_EQ(r.kvs[0].key, "/snigate/v1/nodes/a");
  EXPECT_EQ(r.kvs[0].value, "{}");
  EXPECT_EQ(r.kvs[0].mod_revision, 7);
  EXPECT_EQ(r.kvs[0].lease, 99);
  EXPECT_EQ(r.skipped, 2u);
}

TEST(Answers, ErrorsAndTxn) {
  EXPECT_EQ(parse_range_response("not json").error.substr(0, 9), "not JSON:");
  EXPECT_EQ(
      parse_txn_response(R"({"error":"etcdserver: requested lease not found","code":5})").error,
      "etcdserver: requested lease not found");
  const TxnResult t = parse_txn_response(R"({"header":{"revision":"9"},"succeeded":true})");
  EXPECT_TRUE(t.succeeded);
  EXPECT_EQ(t.revision, 9);
  EXPECT_FALSE(parse_txn_response(R"({"header":{"revision":"9"}})").succeeded);
}

TEST(Answers, LeaseGrantAndKeepalive) {
  const LeaseResult g =
      parse_lease_response(R"({"header":{},"ID":"4111120418144236037","TTL":"2"})");
  EXPECT_EQ(g.id, 4111120418144236037);
  EXPECT_EQ(g.ttl, 2);
  // A keepalive for a lease etcd no longer knows: no TTL (CLUSTER.md "measured facts").
  const LeaseResult lost = parse_lease_response(R"({"result":{"header":{},"ID":"12345"}})");
  EXPECT_EQ(lost.error, "");
  EXPECT_EQ(lost.ttl, 0);
  EXPECT_NE(parse_lease_response(R"({"result":{"ID":true}})").error, "");
}

TEST(Answers, WatchMessages) {
  const WatchParse created =
      parse_watch_message(R"({"result":{"header":{"revision":"1"},"created":true}})");
  ASSERT_TRUE(created.message);
  EXPECT_TRUE(created.message->created);
  const WatchParse events =
      parse_watch_message(R"({"result":{"header":{"revision":"8"},"events":[)"
                          R"({"kv":{"key":"YQ==","mod_revision":"7","value":"e30="}},)"
                          R"({"type":"DELETE","kv":{"key":"Yg==","mod_revision":"8"}},)"
                          R"({"type":"BOGUS","kv":{"key":"Yw=="}},7]}})");
  ASSERT_TRUE(events.message);
  ASSERT_EQ(events.message->events.size(), 2u);
  EXPECT_FALSE(events.message->events[0].deleted);
  EXPECT_TRUE(events.message->events[1].deleted);
  EXPECT_EQ(events.message->events[1].kv.key, "b");
  EXPECT_EQ(events.skipped, 2u);
  const WatchParse compacted = parse_watch_message(
      R"({"result":{"header":{},"canceled":true,"compact_revision":"5","cancel_reason":"x"}})");
  ASSERT_TRUE(compacted.message);
  EXPECT_EQ(compacted.message->compact_revision, 5);
  EXPECT_FALSE(parse_watch_message(R"({"error":{"message":"no leader"}})").message);
  EXPECT_EQ(parse_watch_message(R"({"error":{"message":"no leader"}})").error, "no leader");
}

TEST(Requests, TxnShape) {
  EXPECT_EQ(txn_request({compare_mod("k", 5)}, {delete_op("k")}),
            R"({"compare":[{"key":"aw==","target":"MOD","result":"EQUAL","mod_revision":"5"}],)"
            R"("success":[{"request_delete_range":{"key":"aw=="}}]})");
  EXPECT_EQ(put_op("k", "v", 0), R"({"request_put":{"key":"aw==","value":"dg=="}})");
  EXPECT_EQ(compare_unchanged_since("k", "l", 8),
            R"({"key":"aw==","range_end":"bA==","target":"MOD","result":"LESS",)"
            R"("mod_revision":"8"})");
}

TEST(Endpoints, ParseList) {
  std::string why;
  const auto eps =
      parse_etcd_endpoints("http://127.0.0.1:2379, http://[::1]:2380/,http://e1:1", why);
  ASSERT_EQ(eps.size(), 3u) << why;
  EXPECT_EQ(eps[1].host, "::1");
  EXPECT_EQ(eps[1].port, 2380);
  EXPECT_EQ(eps[2].text(), "e1:1");
  for (const char* bad : {"", "127.0.0.1:2379", "http://h", "http://h:0", "http://h:x",
                          "http://h:1,", "https://h:1"}) {
    EXPECT_TRUE(parse_etcd_endpoints(bad, why).empty()) << bad;
    EXPECT_NE(why, "") << bad;
  }
}

}  // namespace
}  // namespace gw::cluster

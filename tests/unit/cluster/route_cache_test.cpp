// The merged route table (cluster/route_cache.*): precedence over every node's routes, pools
// round-robin over local and remote members, what other nodes hold, and bad entries skipped.
#include "cluster/route_cache.hpp"

#include <gtest/gtest.h>

namespace gw::cluster {
namespace {

KeyValue route(const std::string& host, RouteKind kind, const std::string& node,
               const std::string& session, const std::string& fpr, std::int64_t rev = 1) {
  KeyValue kv;
  kv.key = route_key(RouteKey{host, kind, node, session});
  kv.value = encode_route_value(RouteValue{fpr, "", 0});
  kv.mod_revision = rev;
  return kv;
}

KeyValue node(const std::string& id, const std::string& relay) {
  KeyValue kv;
  kv.key = node_key(id);
  kv.value = encode_node_value(NodeValue{relay, "b", "v"});
  return kv;
}

WatchMessage events(std::vector<WatchEvent> evs, std::int64_t rev) {
  WatchMessage m;
  m.revision = rev;
  m.events = std::move(evs);
  return m;
}

TEST(RouteCache, RemoteWinnerIsAnsweredLocalIsNot) {
  RouteCache cache("n1");
  cache.reset({node("n1", "10.0.0.1:9444"), node("n2", "10.0.0.2:9444"),
               route("a.test", RouteKind::single, "n2", "5.x", "SHA256:A", 11),
               route("b.test", RouteKind::single, "n1", "6.x", "SHA256:B")},
              20);
  const auto r = cache.find_remote("a.test");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->node_id, "n2");
  EXPECT_EQ(r->relay, "10.0.0.2:9444");
  EXPECT_EQ(r->session_id, "5.x");
  EXPECT_EQ(r->revision, 11);
  EXPECT_EQ(r->name, "a.test");
  EXPECT_FALSE(cache.find_remote("b.test"));  // ours: the listener uses EndpointRegistry
  EXPECT_FALSE(cache.find_remote("c.test"));
  EXPECT_EQ(cache.revision(), 20);
  EXPECT_EQ(cache.routes(), 2u);
}

TEST(RouteCache, PrecedenceOverTheMergedTable) {
  // A local wildcard and a remote exact name under it: the exact one wins, as on one node; the
  // most specific wildcard beats a wider one wherever each lives.
  RouteCache cache("n1");
  cache.reset({node("n2", "r2:1"), node("n3", "r3:1"),
               route("*.a.test", RouteKind::single, "n1", "1.x", "SHA256:A"),
               route("app.a.test", RouteKind::single, "n2", "2.x", "SHA256:A"),
               route("*.b.a.test", RouteKind::single, "n3", "3.x", "SHA256:A")},
              5);
  EXPECT_EQ(cache.find_remote("app.a.test")->node_id, "n2");
  EXPECT_FALSE(cache.find_remote("other.a.test"));  // local wildcard
  EXPECT_EQ(cache.find_remote("x.b.a.test")->node_id, "n3");
  EXPECT_FALSE(cache.find_remote("a.test"));  // a wildcard never matches its own base
}

TEST(RouteCache, PoolRoundRobinsOverLocalAndRemote) {
  RouteCache cache("n1");
  cache.reset({node("n2", "r2:1"), route("p.test", RouteKind::pool, "n1", "1.x", "SHA256:A"),
               route("p.test", RouteKind::pool, "n2", "2.x", "SHA256:A")},
              5);
  int remote = 0;
  for (int i = 0; i < 10; ++i) {
    remote += cache.find_remote("p.test") ? 1 : 0;
  }
  EXPECT_EQ(remote, 5);  // every other one is ours
}

TEST(RouteCache, NodeWithoutRelayIsNotRoutedTo) {
  RouteCache cache("n1");
  cache.reset({node("n2", ""), route("a.test", RouteKind::single, "n2", "1.x", "SHA256:A"),
               route("b.test", RouteKind::single, "n9", "1.x", "SHA256:A")},
              5);
  EXPECT_FALSE(cache.find_remote("a.test"));
  EXPECT_FALSE(cache.find_remote("b.test"));  // no node key at all
}

TEST(RouteCache, WatchPutsAndDeletesReportChanges) {
  RouteCache cache("n1");
  cache.reset({node("n2", "r2:1")}, 5);
  std::vector<CacheChange> changes;
  cache.apply(events({{false, route("a.test", RouteKind::single, "n2", "1.x", "SHA256:A", 6)}}, 6),
              &changes);
  ASSERT_TRUE(cache.find_remote("a.test"));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].deleted);
  KeyValue gone;
  gone.key = route_key(RouteKey{"a.test", RouteKind::single, "n2", "1.x"});
  gone.mod_revision = 7;
  changes.clear();
  cache.apply(events({{true, gone}}, 7), &changes);
  EXPECT_FALSE(cache.find_remote("a.test"));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].deleted);
  ASSERT_TRUE(changes[0].route);
  EXPECT_EQ(changes[0].route->node, "n2");
  EXPECT_EQ(cache.routes(), 0u);
  EXPECT_EQ(cache.revision(), 7);
}

TEST(RouteCache, BadValuesAreSkippedAndForgotten) {
  RouteCache cache("n1");
  KeyValue bad = route("a.test", RouteKind::single, "n2", "1.x", "SHA256:A");
  bad.value = "{not json";
  KeyValue badkey;
  badkey.key = "/snigate/v1/routes/A.TEST/single/n2/1";
  badkey.value = "{}";
  std::vector<std::string> warnings;
  EXPECT_EQ(cache.reset({node("n2", "r2:1"), bad, badkey}, 5, &warnings), 2u);
  EXPECT_EQ(warnings.size(), 2u);
  EXPECT_EQ(cache.routes(), 0u);
  // A good route overwritten by garbage is dropped, not kept stale.
  cache.apply(events({{false, route("b.test", RouteKind::single, "n2", "1.x", "SHA256:A")}}, 6));
  KeyValue worse = route("b.test", RouteKind::single, "n2", "1.x", "SHA256:A");
  worse.value = "[]";
  std::vector<CacheChange> changes;
  EXPECT_EQ(cache.apply(events({{false, worse}}, 7), &changes), 1u);
  EXPECT_FALSE(cache.find_remote("b.test"));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].deleted);
}

TEST(RouteCache, ProbeNestingAndUsageSeeOnlyOtherNodes) {
  RouteCache cache("n1");
  cache.reset({node("n2", "r2:1"), route("*.z.test", RouteKind::single, "n2", "1.x", "SHA256:B"),
               route("a.test", RouteKind::single, "n2", "1.x", "SHA256:B"),
               route("p.test", RouteKind::pool, "n2", "2.x", "SHA256:B"),
               route("mine.test", RouteKind::single, "n1", "3.x", "SHA256:A")},
              5);
  EXPECT_EQ(cache.probe_remote("a.test", "SHA256:A"), tunnel::NameState::held);
  EXPECT_EQ(cache.probe_remote("a.test", "SHA256:B"), tunnel::NameState::held_same_key);
  EXPECT_EQ(cache.probe_remote("p.test", "SHA256:A"), tunnel::NameState::held_pooled);
  EXPECT_EQ(cache.probe_remote("mine.test", "SHA256:C"), tunnel::NameState::free);
  EXPECT_EQ(cache.nesting("x.z.test", "SHA256:A"),
            "x.z.test is under *.z.test, which another key's session holds (on node n2): pick a "
            "name outside it");
  EXPECT_EQ(cache.nesting("x.z.test", "SHA256:B"), "");
  EXPECT_EQ(cache.nesting("*.test", "SHA256:B"), "");  // only its own names... and n1's
  EXPECT_NE(cache.nesting("*.test", "SHA256:A"), "");
  const auto u = cache.remote_usage("SHA256:B");
  EXPECT_EQ(u.endpoints, 3u);
  EXPECT_EQ(u.sessions, 2u);
  EXPECT_EQ(cache.remote_usage("SHA256:A").endpoints, 0u);
}

}  // namespace
}  // namespace gw::cluster

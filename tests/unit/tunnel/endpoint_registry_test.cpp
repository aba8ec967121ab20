// EndpointRegistry: one holder per name, pools, takeovers, RAII release, round-robin.
#include "tunnel/endpoint_registry.hpp"

#include <gtest/gtest.h>

namespace gw::tunnel {
namespace {

struct FakeEndpoint : TunnelEndpoint {
  void deliver(IncomingConnection) override {}
  void displaced(const std::string& name) override { displaced_names.push_back(name); }
  std::vector<std::string> displaced_names;
};

ClaimRequest req(const std::string& name, const std::shared_ptr<FakeEndpoint>& ep,
                 const std::string& fp, bool pool = false, bool takeover = false) {
  return ClaimRequest{name, ep, fp, pool, takeover, ""};
}

// Proves: a second claim is refused with a message naming the name, and the first holder keeps
// the route; dropping the Registration frees the name at once.
TEST(EndpointRegistry, SecondClaimRefusedFirstKeepsRoute) {
  auto reg = std::make_shared<EndpointRegistry>();
  auto a = std::make_shared<FakeEndpoint>();
  auto b = std::make_shared<FakeEndpoint>();
  auto first = reg->claim(req("app.alice.test", a, "fpA"));
  ASSERT_TRUE(first.registration);
  auto second = reg->claim(req("app.alice.test", b, "fpB"));
  EXPECT_FALSE(second.registration);
  EXPECT_NE(second.refusal.find("app.alice.test is already in use"), std::string::npos);
  EXPECT_EQ(reg->find("app.alice.test"), a);
  EXPECT_EQ(reg->probe("app.alice.test", "fpB"), NameState::held);
  first.registration.reset();
  EXPECT_EQ(reg->find("app.alice.test"), nullptr);
  EXPECT_EQ(reg->probe("app.alice.test", "fpB"), NameState::free);
}

// Proves: pooled holders share a name round-robin, a non-pooled claimant is refused, and a
// holder leaving removes only itself.
TEST(EndpointRegistry, PoolBalancesAndLeavesIndividually) {
  auto reg = std::make_shared<EndpointRegistry>();
  auto a = std::make_shared<FakeEndpoint>();
  auto b = std::make_shared<FakeEndpoint>();
  auto c = std::make_shared<FakeEndpoint>();
  auto ra = reg->claim(req("p.test", a, "fpA", /*pool=*/true));
  auto rb = reg->claim(req("p.test", b, "fpB", /*pool=*/true));
  ASSERT_TRUE(ra.registration && rb.registration);
  EXPECT_EQ(reg->probe("p.test", "fpC"), NameState::held_pooled);
  EXPECT_FALSE(reg->claim(req("p.test", c, "fpC")).registration);
  int hits_a = 0, hits_b = 0;
  for (int i = 0; i < 10; ++i) {
    const auto ep = reg->find("p.test");
    hits_a += ep == a;
    hits_b += ep == b;
  }
  EXPECT_EQ(hits_a, 5);
  EXPECT_EQ(hits_b, 5);
  ra.registration.reset();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(reg->find("p.test"), b);
  }
}

// Proves: pools form only within a pool group: a claim from another group (another key's
// name under --domain) can't join, with a refusal that says why; the same group can.
TEST(EndpointRegistry, PoolOnlyWithinItsGroup) {
  auto reg = std::make_shared<EndpointRegistry>();
  auto a = std::make_shared<FakeEndpoint>();
  auto b = std::make_shared<FakeEndpoint>();
  auto c = std::make_shared<FakeEndpoint>();
  auto ra = reg->claim(ClaimRequest{"x.dom.test", a, "fpA", true, false, "fpA"});
  ASSERT_TRUE(ra.registration);
  auto rb = reg->claim(ClaimRequest{"x.dom.test", b, "fpB", true, false, "fpB"});
  EXPECT_FALSE(rb.registration);
  EXPECT_NE(rb.refusal.find("pooled by another key"), std::string::npos) << rb.refusal;
  auto rc = reg->claim(ClaimRequest{"x.dom.test", c, "fpA", true, false, "fpA"});
  EXPECT_TRUE(rc.registration);
}

// Proves: --pool can't join a holder that didn't pool.
TEST(EndpointRegistry, PoolRefusedWhenHolderDidNotPool) {
  auto reg = std::make_shared<EndpointRegistry>();
  auto a = std::make_shared<FakeEndpoint>();
  auto b = std::make_shared<FakeEndpoint>();
  auto ra = reg->claim(req("p.test", a, "fpA"));
  auto rb = reg->claim(req("p.test", b, "fpB", /*pool=*/true));
  EXPECT_FALSE(rb.registration);
  EXPECT_NE(rb.refusal.find("did not pass --pool"), std::string::npos);
}

// Proves: a takeover by the same key displaces the holder (which is told), and the displaced
// Registration releasing later does not remove the successor.
TEST(EndpointRegistry, TakeoverBySameKeyOnly) {
  auto reg = std::make_shared<EndpointRegistry>();
  auto old_ep = std::make_shared<FakeEndpoint>();
  auto new_ep = std::make_shared<FakeEndpoint>();
  auto other = std::make_shared<FakeEndpoint>();
  auto old_reg = reg->claim(req("t.test", old_ep, "fpA"));
  EXPECT_EQ(reg->probe("t.test", "fpA"), NameState::held_same_key);
  auto refused = reg->claim(req("t.test", other, "fpB", false, /*takeover=*/true));
  EXPECT_FALSE(refused.registration);
  EXPECT_NE(refused.refusal.find("held by another key"), std::string::npos);
  auto taken = reg->claim(req("t.test", new_ep, "fpA", false, /*takeover=*/true));
  ASSERT_TRUE(taken.registration);
  ASSERT_EQ(taken.displaced.size(), 1u);
  EXPECT_EQ(taken.displaced[0], old_ep);
  EXPECT_EQ(reg->find("t.test"), new_ep);
  old_reg.registration.reset();  // the displaced holder lets go late
  EXPECT_EQ(reg->find("t.test"), new_ep);
}

// Proves: a wildcard holder receives names under it, an exact holder wins over it, and an
// endpoint whose owner is gone routes nowhere.
TEST(EndpointRegistry, WildcardAndGoneOwner) {
  auto reg = std::make_shared<EndpointRegistry>();
  auto wild = std::make_shared<FakeEndpoint>();
  auto exact = std::make_shared<FakeEndpoint>();
  auto rw = reg->claim(req("*.alice.test", wild, "fpA"));
  auto re = reg->claim(req("app.alice.test", exact, "fpA"));
  EXPECT_EQ(reg->find("x.y.alice.test"), wild);
  EXPECT_EQ(reg->find("app.alice.test"), exact);
  exact.reset();
  EXPECT_EQ(reg->find("app.alice.test"), nullptr);
}

// Proves: names of two keys never nest. While fpA holds *.alice.test, fpB may claim neither a
// name nor a narrower wildcard under it (and the refusal names the wildcard), and no wider
// wildcard over it either; the same key may nest its own names; once the holder lets go the
// names are free again. The other order too: a wildcard over another key's exact name is
// refused.
TEST(EndpointRegistry, NamesOfDifferentKeysNeverNest) {
  auto reg = std::make_shared<EndpointRegistry>();
  auto a = std::make_shared<FakeEndpoint>();
  auto b = std::make_shared<FakeEndpoint>();
  auto wild = reg->claim(req("*.alice.test", a, "fpA"));
  ASSERT_TRUE(wild.registration);
  for (const char* name : {"app.alice.test", "x.y.alice.test", "*.deep.alice.test", "*.test"}) {
    auto r = reg->claim(req(name, b, "fpB"));
    EXPECT_FALSE(r.registration) << name;
    EXPECT_NE(r.refusal.find("*.alice.test"), std::string::npos) << name << ": " << r.refusal;
    EXPECT_EQ(reg->probe(name, "fpB"), NameState::held) << name;
    EXPECT_FALSE(reg->nesting(name, "fpB").empty()) << name;
  }
  EXPECT_TRUE(reg->claim(req("app.bob.test", b, "fpB")).registration) << "outside: fine";
  auto own = reg->claim(req("app.alice.test", a, "fpA"));
  EXPECT_TRUE(own.registration) << "a key may nest its own names";
  own.registration.reset();
  wild.registration.reset();
  auto after = reg->claim(req("app.alice.test", b, "fpB"));
  EXPECT_TRUE(after.registration) << after.refusal;
  auto over = reg->claim(req("*.alice.test", a, "fpA"));
  EXPECT_FALSE(over.registration);
  EXPECT_NE(over.refusal.find("would cover app.alice.test"), std::string::npos) << over.refusal;
}

// Proves: route() reports a name's binding and its holders' keys (no duplicates), find() is
// route().endpoint, and a pool never mixes internal and public holders.
TEST(EndpointRegistry, RouteCarriesBindingAndHolders) {
  auto reg = std::make_shared<EndpointRegistry>();
  auto a = std::make_shared<FakeEndpoint>();
  auto b = std::make_shared<FakeEndpoint>();
  auto c = std::make_shared<FakeEndpoint>();
  ClaimRequest internal{"app.internal", a, "fpA", true, false, ""};
  internal.internal = true;
  auto first = reg->claim(internal);
  ASSERT_TRUE(first.registration);
  internal.endpoint = b;
  auto second = reg->claim(internal);  // same key, pooled: one fingerprint listed
  ASSERT_TRUE(second.registration);
  const Route r = reg->route("app.internal");
  EXPECT_TRUE(r.internal);
  EXPECT_EQ(r.key_fingerprints, std::vector<std::string>{"fpA"});
  EXPECT_TRUE(r.endpoint == a || r.endpoint == b);
  auto public_join = reg->claim(ClaimRequest{"app.internal", c, "fpA", true, false, ""});
  EXPECT_FALSE(public_join.registration);
  EXPECT_NE(public_join.refusal.find("is held as an internal endpoint"), std::string::npos)
      << public_join.refusal;
  EXPECT_FALSE(reg->route("app.alice.test").internal);
  EXPECT_EQ(reg->route("app.alice.test").endpoint, nullptr);
  auto pub = reg->claim(req("app.alice.test", c, "fpC"));
  ASSERT_TRUE(pub.registration);
  EXPECT_FALSE(reg->route("app.alice.test").internal);
  EXPECT_EQ(reg->find("app.alice.test"), c);
}

// Proves: find_held_by() answers the holder with the named session only when the name's
// binding is the one asked for (a public visitor's relay never reaches an internal endpoint, a
// teammate's never a public one).
TEST(EndpointRegistry, FindHeldByAnswersOnlyTheAskedBinding) {
  struct SessionEndpoint : FakeEndpoint {
    explicit SessionEndpoint(std::uint64_t id) : id(id) {}
    std::uint64_t session_id() const override { return id; }
    std::uint64_t id;
  };
  auto reg = std::make_shared<EndpointRegistry>();
  auto pub = std::make_shared<SessionEndpoint>(7);
  auto internal = std::make_shared<SessionEndpoint>(8);
  auto held_pub = reg->claim(ClaimRequest{"app.alice.test", pub, "fpA", false, false, ""});
  ClaimRequest r{"app.internal", internal, "fpA", false, false, ""};
  r.internal = true;
  auto held_internal = reg->claim(r);
  ASSERT_TRUE(held_pub.registration);
  ASSERT_TRUE(held_internal.registration);
  EXPECT_EQ(reg->find_held_by("app.alice.test", 7, false), pub);
  EXPECT_EQ(reg->find_held_by("app.alice.test", 8, false), nullptr);
  EXPECT_EQ(reg->find_held_by("app.alice.test", 7, true), nullptr);
  EXPECT_EQ(reg->find_held_by("app.internal", 8, false), nullptr);
  EXPECT_EQ(reg->find_held_by("app.internal", 8, true), internal);
  EXPECT_EQ(reg->find("app.internal"), internal);  // still routed for ssh -L / -W
}

}  // namespace
}  // namespace gw::tunnel

// decide_claim (tunnel/claim_decision.hpp): one table for both registries, the single node's
// and the cluster's, so a name held on another node is refused in the same words.
#include "tunnel/claim_decision.hpp"

#include <gtest/gtest.h>

namespace gw::tunnel {
namespace {

HoldersView held(bool pool, bool same_key, bool same_group) {
  return HoldersView{false, pool, same_key, same_group};
}

TEST(ClaimDecision, Table) {
  struct Case {
    const char* what;
    bool pool, takeover;
    HoldersView holders;
    ClaimVerdict verdict;
    const char* refusal;
  } cases[] = {
      {"free", false, false, HoldersView{}, ClaimVerdict::add, ""},
      {"join a pool of the group", true, false, held(true, false, true), ClaimVerdict::add, ""},
      {"takeover by the same key", false, true, held(false, true, true), ClaimVerdict::replace, ""},
      {"takeover of another key", false, true, held(false, false, false), ClaimVerdict::refuse,
       "a.test is held by another key: --takeover only moves a name between sessions of the "
       "same key"},
      {"pool of another group", true, false, held(true, false, false), ClaimVerdict::refuse,
       "a.test is pooled by another key, and only keys given the name in authorized_keys "
       "(permitlisten) may pool it together"},
      {"pool against a single", true, false, held(false, false, true), ClaimVerdict::refuse,
       "a.test is in use by a session that did not pass --pool"},
      {"single against a pool", false, false, held(true, true, true), ClaimVerdict::refuse,
       "a.test is pooled by other sessions: add --pool to share it"},
      {"same key, no takeover", false, false, held(false, true, true), ClaimVerdict::refuse,
       "a.test is in use by another session of your key: add --takeover to move it here"},
      {"another key", false, false, held(false, false, false), ClaimVerdict::refuse,
       "a.test is already in use by another session (pick another name)"},
  };
  for (const Case& c : cases) {
    const ClaimDecision d = decide_claim("a.test", c.pool, c.takeover, c.holders);
    EXPECT_EQ(d.verdict, c.verdict) << c.what;
    EXPECT_EQ(d.refusal, c.refusal) << c.what;
  }
}

TEST(ClaimDecision, NestingWords) {
  EXPECT_EQ(nested_under("x.a.test", "*.a.test"),
            "x.a.test is under *.a.test, which another key's session holds: pick a name outside "
            "it");
  EXPECT_EQ(nested_over("*.a.test", "x.a.test", " (on node n2)"),
            "*.a.test would cover x.a.test, which another key's session holds (on node n2): pick "
            "a narrower name");
}

}  // namespace
}  // namespace gw::tunnel

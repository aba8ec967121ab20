// OpenSSH-style pattern matching: globs, lists with negation, case folding, the wildcard-subject
// rule, pattern intersection, and a bound on work for pathological patterns.
#include "keys/pattern.hpp"

#include <gtest/gtest.h>

#include <string>

namespace gw::keys {
namespace {

struct GlobCase {
  const char* label;
  std::string s;
  std::string pattern;
  bool match;
};

// match_pattern follows match.c: whole-string, `*` any run, `?` one byte.
TEST(Pattern, Glob) {
  const GlobCase cases[] = {
      {"exact", "abc", "abc", true},
      {"exact mismatch", "abc", "abd", false},
      {"prefix only", "abcd", "abc", false},
      {"star all", "anything.at.all", "*", true},
      {"star empty string", "", "*", true},
      {"empty pattern empty string", "", "", true},
      {"empty pattern", "a", "", false},
      {"star suffix", "app.alice.test", "*.alice.test", true},
      {"star crosses dots", "a.b.alice.test", "*.alice.test", true},
      {"star needs dot", "alice.test", "*.alice.test", false},
      {"question one", "a1.test", "a?.test", true},
      {"question not zero", "a.test", "a?.test", false},
      {"star middle", "app-dev.test", "app*.test", true},
      {"backtrack", "aXbXbc", "a*bc", true},
      {"backtrack fails", "aXbXbd", "a*bc", false},
      {"many stars", "abc", "***a***b***c***", true},
      {"case sensitive", "ABC", "abc", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(match_pattern(c.s, c.pattern), c.match) << c.label;
  }
  EXPECT_TRUE(match_pattern("ABC", "a?c", {.case_insensitive = true}));
}

// Negation wins regardless of position; empty elements match only "".
TEST(Pattern, List) {
  EXPECT_EQ(match_pattern_list("a.test", "b.test,a.test", false), ListMatch::match);
  EXPECT_EQ(match_pattern_list("c.test", "b.test,a.test", false), ListMatch::no_match);
  EXPECT_EQ(match_pattern_list("admin.test", "*.test,!admin.test", false), ListMatch::negated);
  EXPECT_EQ(match_pattern_list("admin.test", "!admin.test,*.test", false), ListMatch::negated);
  EXPECT_EQ(match_pattern_list("x.test", "!admin.test", false), ListMatch::no_match);
  EXPECT_EQ(match_pattern_list("APP.Test", "app.test", true), ListMatch::match);
  EXPECT_EQ(match_pattern_list("APP.Test", "app.test", false), ListMatch::no_match);
  EXPECT_EQ(match_pattern_list("app.test", "*.TEST", true), ListMatch::match);
  EXPECT_EQ(match_pattern_list("", "a,,b", false), ListMatch::match);
  EXPECT_EQ(match_pattern_list("x", "a,,b", false), ListMatch::no_match);
  EXPECT_EQ(match_pattern_list("x", "", false), ListMatch::no_match);
}

// A literal '*' in the subject is only covered by a pattern '*'.
TEST(Pattern, SubjectStarNeedsPatternStar) {
  const GlobOptions o{.case_insensitive = true, .subject_star_needs_pattern_star = true};
  EXPECT_TRUE(match_pattern("*.alice.test", "*.alice.test", o));
  EXPECT_TRUE(match_pattern("*.alice.test", "*", o));
  EXPECT_TRUE(match_pattern("*.x.alice.test", "*.alice.test", o));
  EXPECT_FALSE(match_pattern("*.alice.test", "?.alice.test", o));
  EXPECT_FALSE(match_pattern("*.alice.test", "app.alice.test", o));
  EXPECT_TRUE(match_pattern("*.alice.test", "?.alice.test"));  // plain glob: '?' eats '*'
}

// patterns_intersect finds a common string when one exists.
TEST(Pattern, Intersect) {
  EXPECT_TRUE(patterns_intersect("*.alice.test", "admin.alice.test", false));
  EXPECT_TRUE(patterns_intersect("*.alice.test", "*.prod.alice.test", false));
  EXPECT_TRUE(patterns_intersect("a*", "*b", false));
  EXPECT_TRUE(patterns_intersect("a?c", "?b?", false));
  EXPECT_TRUE(patterns_intersect("*.ALICE.test", "x.alice.TEST", true));
  EXPECT_FALSE(patterns_intersect("*.alice.test", "*.bob.test", false));
  EXPECT_FALSE(patterns_intersect("*.dev.alice.test", "*.prod.alice.test", false));
  EXPECT_FALSE(patterns_intersect("abc", "abd", false));
  EXPECT_FALSE(patterns_intersect("a?", "a", false));
  EXPECT_TRUE(patterns_intersect("", "*", false));
  EXPECT_FALSE(patterns_intersect("", "?", false));
}

// `*a*a...*ab` against 20k bytes: O(n*m) steps, finishes at once (exponential would never end).
TEST(Pattern, PathologicalPatternsAreBounded) {
  const std::string s(20000, 'a');
  std::string p;
  for (int i = 0; i < 200; ++i) {
    p += "*a";
  }
  p += "b";
  EXPECT_FALSE(match_pattern(s, p));
  EXPECT_FALSE(match_pattern(s, std::string(5000, '*') + "b"));
  EXPECT_FALSE(patterns_intersect(s, p, false));
}

}  // namespace
}  // namespace gw::keys

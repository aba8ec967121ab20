// ascii.hpp: ASCII-only case folding (bytes >= 0x80 untouched), symmetric iequals, trimming, and
// comma splitting that keeps empty elements.
#include "common/ascii.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace gw::ascii {
namespace {

using namespace std::string_view_literals;

// Proves: only A-Z fold; digits, punctuation, '@', '[' (next to the letters) and high bytes stay.
TEST(Ascii, LowerFoldsOnlyAsciiLetters) {
  EXPECT_EQ(lower('A'), 'a');
  EXPECT_EQ(lower('Z'), 'z');
  EXPECT_EQ(lower('a'), 'a');
  EXPECT_EQ(lower('@'), '@');        // 'A' - 1
  EXPECT_EQ(lower('['), '[');        // 'Z' + 1
  EXPECT_EQ(lower('\xc4'), '\xc4');  // Latin-1 'Ä' is not ours to fold
  EXPECT_EQ(lower("App.Example.COM-9"), "app.example.com-9");
  EXPECT_EQ(lower("\xc3\x84Z"sv), "\xc3\x84z");
  EXPECT_EQ(lower(""), "");
}

// Proves: iequals folds both sides (the copy in authorized_keys.cpp folded only the first).
TEST(Ascii, IequalsIsSymmetric) {
  EXPECT_TRUE(iequals("Restrict", "restrict"));
  EXPECT_TRUE(iequals("restrict", "RESTRICT"));
  EXPECT_TRUE(iequals("Bearer", "bEARER"));
  EXPECT_TRUE(iequals("", ""));
  EXPECT_FALSE(iequals("restrict", "restricts"));
  EXPECT_FALSE(iequals("from", "form"));
  EXPECT_FALSE(iequals("@", "`"));        // 0x40 and 0x60 differ by the case bit only
  EXPECT_FALSE(iequals("\xc4", "\xe4"));  // Latin-1 Ä/ä: not ASCII, compared exactly
  EXPECT_TRUE(iequals("\xc4x", "\xc4X"));
  static_assert(iequals("No-Pty", "no-pty"));  // usable in constant expressions
}

// Proves: trim strips spaces, tabs and CR at both ends only, and a custom set works.
TEST(Ascii, Trim) {
  EXPECT_EQ(trim("  a b \t\r"), "a b");
  EXPECT_EQ(trim("\r\n x"), "\n x");  // \n is not blank here: lines are split on it first
  EXPECT_EQ(trim(" \t\r "), "");
  EXPECT_EQ(trim(""), "");
  EXPECT_EQ(trim("x"), "x");
  EXPECT_EQ(trim("--x--", "-"), "x");
  EXPECT_EQ(trim(" x\r", " \t"), "x\r");
  static_assert(trim("  k ") == "k");
}

// Proves: split_commas keeps every element, empty ones included, in order.
TEST(Ascii, SplitCommasKeepsEmptyElements) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(split_commas("a,b,c"), (V{"a", "b", "c"}));
  EXPECT_EQ(split_commas("a"), (V{"a"}));
  EXPECT_EQ(split_commas(""), (V{""}));
  EXPECT_EQ(split_commas("a,,b"), (V{"a", "", "b"}));
  EXPECT_EQ(split_commas(",a,"), (V{"", "a", ""}));
  EXPECT_EQ(split_commas(" a , b"), (V{" a ", " b"}));  // no trimming: callers decide
}

}  // namespace
}  // namespace gw::ascii

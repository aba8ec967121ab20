// Tests for RouteTable: the exact > longest wildcard > none precedence as a table, key
// handling for insert/erase/find_exact, and that lookups don't depend on the number of routes.
// Deliberately no hostname normalisation here: Hostname has its own tests.
#include "tunnel/route_table.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace gw::tunnel {
namespace {

// Proves the lookup order of DESIGN section 4 on one table of overlapping routes.
TEST(RouteTable, PrecedenceTable) {
  RouteTable<std::string> t;
  for (const char* key : {"app.example.com", "*.example.com", "*.a.example.com", "b.a.example.com",
                          "*.com", "example.org"}) {
    ASSERT_TRUE(t.insert(key, key)) << key;
  }
  struct Case {
    const char* host;
    const char* route;  // nullptr: no route
  };
  const std::vector<Case> cases = {
      {"app.example.com", "app.example.com"},    // exact beats every wildcard
      {"b.a.example.com", "b.a.example.com"},    // exact beats *.a.example.com
      {"c.a.example.com", "*.a.example.com"},    // longest wildcard suffix wins
      {"x.c.a.example.com", "*.a.example.com"},  // wildcards match any depth
      {"a.example.com", "*.example.com"},        // *.a.example.com doesn't match a.example.com
      {"x.example.com", "*.example.com"},        //
      {"x.y.example.com", "*.example.com"},      //
      {"example.com", "*.com"},                  // the bare suffix is not under *.example.com
      {"other.com", "*.com"},                    //
      {"example.org", "example.org"},            //
      {"x.example.org", nullptr},                // exact routes don't cover subdomains
      {"org", nullptr},                          //
      {"com", nullptr},                          // *.com needs a label in front
      {"notexample.com", "*.com"},               // label-wise: not under *.example.com
      {"", nullptr},                             //
      {".example.com", "*.com"},                 // an empty leftmost label is not a label
  };
  for (const auto& c : cases) {
    const std::string* got = t.find(c.host);
    if (c.route == nullptr) {
      EXPECT_EQ(got, nullptr) << c.host << " -> " << (got ? *got : "");
    } else {
      ASSERT_NE(got, nullptr) << c.host;
      EXPECT_EQ(*got, c.route) << c.host;
    }
  }
}

// Proves a taken key is refused without changing the stored value, and keys are distinct per kind.
TEST(RouteTable, InsertRefusesTakenKey) {
  RouteTable<int> t;
  EXPECT_TRUE(t.insert("example.com", 1));
  EXPECT_FALSE(t.insert("example.com", 2));
  EXPECT_TRUE(t.insert("*.example.com", 3));  // a wildcard is a different key
  EXPECT_FALSE(t.insert("*.example.com", 4));
  EXPECT_EQ(*t.find("example.com"), 1);
  EXPECT_EQ(*t.find("x.example.com"), 3);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_FALSE(t.insert("", 5));
  EXPECT_FALSE(t.insert("*.", 6));
  EXPECT_EQ(t.size(), 2u);
}

// Proves erase and find_exact work on keys, never on wildcard matches.
TEST(RouteTable, EraseAndFindExact) {
  RouteTable<int> t;
  ASSERT_TRUE(t.insert("*.example.com", 1));
  ASSERT_TRUE(t.insert("a.example.com", 2));
  EXPECT_EQ(t.find_exact("b.example.com"), nullptr);  // matched by the wildcard, not a key
  ASSERT_NE(t.find_exact("*.example.com"), nullptr);
  EXPECT_EQ(*t.find_exact("*.example.com"), 1);
  EXPECT_FALSE(t.erase("b.example.com"));
  EXPECT_TRUE(t.erase("a.example.com"));
  EXPECT_EQ(*t.find("a.example.com"), 1);  // now falls back to the wildcard
  EXPECT_TRUE(t.erase("*.example.com"));
  EXPECT_EQ(t.find("a.example.com"), nullptr);
  EXPECT_FALSE(t.erase("*.example.com"));
  EXPECT_TRUE(t.empty());
}

// Proves lookups stay right with 1,000 routes (they are hash probes per label, not a scan).
TEST(RouteTable, ThousandRoutes) {
  RouteTable<int> t;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(t.insert("t" + std::to_string(i) + ".example.com", i));
    ASSERT_TRUE(t.insert("*.w" + std::to_string(i) + ".example.com", 1000 + i));
  }
  EXPECT_EQ(t.size(), 2000u);
  EXPECT_EQ(*t.find("t999.example.com"), 999);
  EXPECT_EQ(*t.find("deep.er.w500.example.com"), 1500);
  EXPECT_EQ(t.find("t1000.example.com"), nullptr);
}

}  // namespace
}  // namespace gw::tunnel

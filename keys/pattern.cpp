// OpenSSH-style glob and pattern-list matching; see pattern.hpp. Written from match.c's
// documented semantics, not its code: the recursive matcher there is exponential on `*a*a*a`,
// this one backtracks only to the most recent `*`, which is enough for globs without classes.
#include "keys/pattern.hpp"

#include <vector>

#include "common/ascii.hpp"

namespace gw::keys {
namespace {

char fold(char c, bool ci) { return ci ? ascii::lower(c) : c; }

bool char_matches(char sc, char pc, const GlobOptions& o) {
  if (pc == '?') {
    return !(o.subject_star_needs_pattern_star && sc == '*');
  }
  if (o.subject_star_needs_pattern_star && sc == '*') {
    return false;
  }
  return fold(sc, o.case_insensitive) == fold(pc, o.case_insensitive);
}

}  // namespace

bool match_pattern(std::string_view s, std::string_view p, GlobOptions o) {
  std::size_t si = 0;
  std::size_t pi = 0;
  // Where to resume after the most recent `*`: retrying from only the latest star is complete
  // because an earlier star can absorb anything a later one could.
  std::size_t star_p = std::string_view::npos;
  std::size_t star_s = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star_p = pi++;
      star_s = si;
    } else if (pi < p.size() && char_matches(s[si], p[pi], o)) {
      ++si;
      ++pi;
    } else if (star_p != std::string_view::npos) {
      pi = star_p + 1;
      si = ++star_s;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') {
    ++pi;
  }
  return pi == p.size();
}

ListMatch match_pattern_list(std::string_view s, std::string_view list, GlobOptions o) {
  bool matched = false;
  for (std::string_view item : ascii::split_commas(list)) {
    const bool negate = !item.empty() && item.front() == '!';
    if (negate) {
      item.remove_prefix(1);
    }
    if (match_pattern(s, item, o)) {
      if (negate) {
        return ListMatch::negated;
      }
      matched = true;
    }
  }
  return matched ? ListMatch::match : ListMatch::no_match;
}

ListMatch match_pattern_list(std::string_view s, std::string_view list, bool case_insensitive) {
  return match_pattern_list(s, list, GlobOptions{.case_insensitive = case_insensitive});
}

bool patterns_intersect(std::string_view a, std::string_view b, bool ci) {
  // ok[j] for the current i = "some string matches both a[i..] and b[j..]"; filled from the
  // ends backwards. A `*` on either side may match nothing (skip it) or eat one character the
  // other side produces (stay on the star, advance the other side).
  const std::size_t n = b.size();
  std::vector<char> next(n + 1, 0);  // row i + 1
  std::vector<char> cur(n + 1, 0);   // row i
  for (std::size_t i = a.size() + 1; i-- > 0;) {
    for (std::size_t j = n + 1; j-- > 0;) {
      const bool a_end = i == a.size();
      const bool b_end = j == n;
      bool r = false;
      if (a_end && b_end) {
        r = true;
      } else if (!a_end && a[i] == '*') {
        r = next[j] || (!b_end && cur[j + 1]);
      } else if (!b_end && b[j] == '*') {
        r = cur[j + 1] || (!a_end && next[j]);
      } else if (!a_end && !b_end) {
        r = (a[i] == '?' || b[j] == '?' || fold(a[i], ci) == fold(b[j], ci)) && next[j + 1];
      }
      cur[j] = r;
    }
    std::swap(cur, next);
  }
  return next[0];
}

}  // namespace gw::keys

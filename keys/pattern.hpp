// OpenSSH-style patterns (`*`, `?`, comma lists with `!` negation) as used by authorized_keys
// `from=` and `permitlisten=`, with the semantics of OpenSSH's match.c. Deliberately no CIDR
// matching (`from=` addresses are matched elsewhere) and no character classes: OpenSSH has none.
// Matching is iterative (no recursion), so `*****a` patterns cost O(|s| * |pattern|) at worst.
#pragma once

#include <string_view>

namespace gw::keys {

struct GlobOptions {
  /// Compare ASCII letters without regard to case.
  bool case_insensitive = false;
  /// A literal `*` in the subject may only be consumed by a `*` in the pattern, never by `?` or
  /// an exact character. Set this when the subject is itself a wildcard name (`*.a.test`) and
  /// the question is "does the pattern allow every name the wildcard covers?".
  bool subject_star_needs_pattern_star = false;
};

/// True if the whole of `s` matches `pattern`: `*` matches any run of bytes (including none),
/// `?` exactly one byte, anything else itself. Never fails; an empty pattern matches only "".
bool match_pattern(std::string_view s, std::string_view pattern, GlobOptions options = {});

enum class ListMatch { no_match, match, negated };

/// Matches `s` against a comma-separated list of patterns, each optionally prefixed with `!`.
/// Returns negated if any `!pattern` matches (negation wins whatever the order), else match if
/// any positive pattern matches, else no_match. An empty list element matches only "".
ListMatch match_pattern_list(std::string_view s, std::string_view comma_list,
                             bool case_insensitive);

/// As match_pattern_list, with the full GlobOptions (see subject_star_needs_pattern_star).
ListMatch match_pattern_list(std::string_view s, std::string_view comma_list, GlobOptions options);

/// True if some string matches both glob `a` and glob `b` (both may contain `*` and `?`).
/// Used to ask whether a wildcard request could cover a name a `!pattern` forbids.
/// O(|a| * |b|) time and O(|b|) memory.
bool patterns_intersect(std::string_view a, std::string_view b, bool case_insensitive);

}  // namespace gw::keys

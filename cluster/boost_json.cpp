// The one translation unit that compiles Boost.JSON (header-only mode: Debian 12 ships no
// libboost_json for 1.81 in libboost1.81-dev, and one TU is all it needs).
#include <boost/json/src.hpp>

#include "keys/source_match.hpp"

#include <string_view>

#include "common/ascii.hpp"
#include "common/cidr.hpp"
#include "keys/pattern.hpp"

namespace gw::keys {
namespace {

enum class Entry { miss, hit, invalid };

/// Does one (un-negated) entry match? A CIDR entry matches by prefix, anything else as a
/// glob over the address text. A CIDR that doesn't parse (or has bits past its length) is
/// invalid: the parser refuses such lines, but KeyOptions can be built by hand, and OpenSSH
/// fails the whole check then rather than skipping the entry.
Entry entry_matches(std::string_view entry, const boost::asio::ip::address& client,
                    const std::string& client_text) {
  if (entry.empty()) {
    return Entry::invalid;
  }
  if (entry.find('/') != std::string_view::npos) {
    const auto cidr = gw::Cidr::parse(entry);
    if (!cidr || cidr->has_host_bits()) {
      return Entry::invalid;
    }
    return cidr->contains(client) ? Entry::hit : Entry::miss;
  }
  if (entry.find_first_of("*?") == std::string_view::npos) {
    // A plain address is compared as an address, as OpenSSH does: `!0::1` and
    // `!0:0:0:0:0:0:0:1` exclude ::1 however they are written.
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(std::string(entry), ec);
    if (!ec) {
      return gw::Cidr::parse(address.to_string() + (address.is_v4() ? "/32" : "/128"))
                     ->contains(client)
                 ? Entry::hit
                 : Entry::miss;
    }
  }
  return match_pattern(client_text, entry, GlobOptions{.case_insensitive = true}) ? Entry::hit
                                                                                  : Entry::miss;
}

}  // namespace

bool source_allowed(const KeyOptions& options, const boost::asio::ip::address& client,
                    std::string* why) {
  if (options.from.empty()) {
    return true;
  }
  // A v4 client on a dual-stack socket arrives as ::ffff:a.b.c.d: match it as a.b.c.d.
  auto address = client;
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, address.to_v6());
  }
  const std::string text = address.to_string();
  bool allowed = false;
  for (const std::string& list : options.from) {
    // Elements are normally single entries (the parser splits the list), but a hand-built
    // KeyOptions may hold a comma list; every piece is checked, empty ones included.
    for (std::string_view entry : ascii::split_commas(list)) {
      const bool negated = !entry.empty() && entry.front() == '!';
      if (negated) {
        entry.remove_prefix(1);
      }
      const Entry m = entry_matches(entry, address, text);
      if (m == Entry::invalid) {
        if (why) {
          *why = "from=\"" + list + "\" has an invalid entry";
        }
        return false;
      }
      if (m == Entry::miss) {
        continue;
      }
      if (negated) {
        if (why) {
          *why = text + " is excluded by from=\"" + list + "\"";
        }
        return false;
      }
      allowed = true;
    }
  }
  if (!allowed && why) {
    std::string joined;
    for (const auto& entry : options.from) {
      joined += (joined.empty() ? "" : ",") + entry;
    }
    *why = text + " is not in from=\"" + joined + "\"";
  }
  return allowed;
}

}  // namespace gw::keys

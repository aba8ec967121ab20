#include "keys/source_match.hpp"

#include <string_view>

#include "keys/pattern.hpp"
#include "tunnel/cidr.hpp"

namespace gw::keys {
namespace {

/// Does one (un-negated) entry match? A CIDR entry matches by prefix, anything else as a
/// glob over the address text.
bool entry_matches(std::string_view entry, const boost::asio::ip::address& client,
                   const std::string& client_text) {
  if (entry.find('/') != std::string_view::npos) {
    const auto cidr = tunnel::Cidr::parse(entry);
    return cidr && cidr->contains(client);
  }
  return match_pattern(client_text, entry, GlobOptions{.case_insensitive = true});
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
    std::string_view rest = list;
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      std::string_view entry = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      const bool negated = !entry.empty() && entry.front() == '!';
      if (negated) {
        entry.remove_prefix(1);
      }
      if (entry.empty() || !entry_matches(entry, address, text)) {
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

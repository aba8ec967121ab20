// CIDR parsing and matching; see cidr.hpp.
#include "common/cidr.hpp"

#include <algorithm>
#include <charconv>

namespace gw {
namespace {

/// IPv4-mapped IPv6 becomes IPv4, so one rule covers both ways a v4 client can arrive.
boost::asio::ip::address canonical(const boost::asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
  }
  return a;
}

template <class Bytes>
bool prefix_equal(const Bytes& a, const Bytes& b, unsigned prefix) {
  const unsigned whole = prefix / 8;
  if (!std::equal(a.begin(), a.begin() + whole, b.begin())) {
    return false;
  }
  const unsigned rest = prefix % 8;
  if (rest == 0) {
    return true;
  }
  const auto mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

/// Clears every bit at or after position `prefix`.
template <class Bytes>
void mask_from(Bytes& bytes, unsigned prefix) {
  for (unsigned i = 0; i < bytes.size(); ++i) {
    const unsigned keep = prefix > i * 8 ? std::min(8u, prefix - i * 8) : 0;
    bytes[i] &= static_cast<unsigned char>(keep == 0 ? 0 : 0xff << (8 - keep));
  }
}

}  // namespace

std::optional<Cidr> Cidr::parse(std::string_view text) {
  const std::size_t slash = text.find('/');
  const std::string_view addr = text.substr(0, slash);
  // Zone ids (fe80::1%eth0) name an interface of this host, not a network: a rule with one
  // would silently mean something different on another machine. Boost would accept them.
  if (addr.empty() || addr.find('%') != std::string_view::npos) {
    return std::nullopt;
  }
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(std::string(addr), ec);
  if (ec) {
    return std::nullopt;
  }
  const auto network = canonical(address);
  const unsigned max = network.is_v4() ? 32 : 128;
  unsigned prefix = address.is_v4() ? 32 : 128;
  if (slash != std::string_view::npos) {
    // Digits only, no leading zero ("/08" is a typo, not 8), at most 3 so it cannot overflow.
    const std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0') ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
    std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
  }
  if (address.is_v6() && network.is_v4()) {
    // ::ffff:10.0.0.0/104 is 10.0.0.0/8.
    if (prefix < 96) {
      return std::nullopt;
    }
    prefix -= 96;
  }
  if (prefix > max) {
    return std::nullopt;
  }
  return Cidr(network, prefix);
}

bool Cidr::has_host_bits() const {
  // Compare with the network masked to the prefix: a mismatch means bits past the prefix.
  if (network_.is_v4()) {
    const auto bytes = network_.to_v4().to_bytes();
    auto masked = bytes;
    mask_from(masked, prefix_);
    return masked != bytes;
  }
  const auto bytes = network_.to_v6().to_bytes();
  auto masked = bytes;
  mask_from(masked, prefix_);
  return masked != bytes;
}

bool Cidr::contains(const boost::asio::ip::address& address) const {
  const auto a = canonical(address);
  if (a.is_v4() != network_.is_v4()) {
    return false;
  }
  if (a.is_v4()) {
    return prefix_equal(a.to_v4().to_bytes(), network_.to_v4().to_bytes(), prefix_);
  }
  return prefix_equal(a.to_v6().to_bytes(), network_.to_v6().to_bytes(), prefix_);
}

bool Cidr::covers(const boost::asio::ip::address& address) const {
  const auto a = canonical(address);
  if (a.is_v4() && network_.is_v6()) {
    // An IPv4 client is ::ffff:a.b.c.d in IPv6 terms: a v6 prefix covers it when it covers
    // that address, so `::/0` means every client, v4 included (`2001:db8::/32` none of them).
    const auto mapped = boost::asio::ip::make_address_v6(boost::asio::ip::v4_mapped, a.to_v4());
    return prefix_equal(mapped.to_bytes(), network_.to_v6().to_bytes(), prefix_);
  }
  return contains(a);
}

std::string Cidr::str() const { return network_.to_string() + "/" + std::to_string(prefix_); }

bool AccessRule::permits(const boost::asio::ip::address& address, std::string* why) const {
  for (const auto& c : deny) {
    if (c.covers(address)) {
      if (why) {
        *why = "in --deny-cidr " + c.str();
      }
      return false;
    }
  }
  if (allow.empty() ||
      std::any_of(allow.begin(), allow.end(), [&](const Cidr& c) { return c.covers(address); })) {
    return true;
  }
  if (why) {
    *why = "not in --allow-cidr";
  }
  return false;
}

}  // namespace gw

#include "tunnel/cidr.hpp"

#include <algorithm>
#include <charconv>

namespace gw::tunnel {
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

}  // namespace

std::optional<Cidr> Cidr::parse(std::string_view text) {
  const std::size_t slash = text.find('/');
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(std::string(text.substr(0, slash)), ec);
  if (ec) {
    return std::nullopt;
  }
  const auto network = canonical(address);
  const unsigned max = network.is_v4() ? 32 : 128;
  unsigned prefix = address.is_v4() ? 32 : 128;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    const auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (err != std::errc() || end != digits.data() + digits.size() || digits.empty()) {
      return std::nullopt;
    }
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

std::string Cidr::str() const { return network_.to_string() + "/" + std::to_string(prefix_); }

bool AccessRule::permits(const boost::asio::ip::address& address, std::string* why) const {
  for (const auto& c : deny) {
    if (c.contains(address)) {
      if (why) {
        *why = "in --deny-cidr " + c.str();
      }
      return false;
    }
  }
  if (allow.empty() ||
      std::any_of(allow.begin(), allow.end(), [&](const Cidr& c) { return c.contains(address); })) {
    return true;
  }
  if (why) {
    *why = "not in --allow-cidr";
  }
  return false;
}

}  // namespace gw::tunnel

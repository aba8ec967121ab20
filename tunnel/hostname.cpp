// Hostname parsing and normalisation; see hostname.hpp. Deliberately allocation-light and
// table-free: one pass to normalise, one pass over labels to validate.
#include "tunnel/hostname.hpp"

#include <string>
#include <vector>

#include "common/ascii.hpp"

namespace gw::tunnel {
namespace {

class HostnameCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "gw.tunnel.hostname"; }
  std::string message(int ev) const override {
    switch (static_cast<hostname_errc>(ev)) {
      case hostname_errc::empty:
        return "hostname is empty";
      case hostname_errc::too_long:
        return "hostname is longer than 253 characters";
      case hostname_errc::empty_label:
        return "hostname has an empty label";
      case hostname_errc::label_too_long:
        return "hostname has a label longer than 63 characters";
      case hostname_errc::bad_character:
        return "hostname may contain only letters, digits, hyphens and dots (write "
               "internationalised names as xn-- A-labels)";
      case hostname_errc::label_hyphen:
        return "hostname labels may not start or end with a hyphen";
      case hostname_errc::ip_literal:
        return "IP addresses are not hostnames: use a DNS name";
      case hostname_errc::wildcard_position:
        return "a wildcard must be the whole leftmost label, as in *.example.com";
      case hostname_errc::wildcard_not_allowed:
        return "a wildcard name is not allowed here";
      case hostname_errc::all_numeric_tld:
        return "the last label of a hostname may not be all digits";
    }
    return "unknown hostname error";
  }
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }

bool all_digits(std::string_view s) {
  for (char c : s) {
    if (!is_digit(c)) {
      return false;
    }
  }
  return !s.empty();
}

// inet_aton() accepts 1 to 4 parts, each decimal, octal (leading 0) or hex (0x...): so
// `127.1` and `0x7f.0.0.1` are addresses to many resolvers. Refuse every such shape.
bool is_numeric_part(std::string_view s) {
  if (s.size() > 2 && s[0] == '0' && s[1] == 'x') {
    for (char c : s.substr(2)) {
      if (!is_hex(c)) {
        return false;
      }
    }
    return true;
  }
  return all_digits(s);
}

std::vector<std::string_view> split_labels(std::string_view s) {
  std::vector<std::string_view> labels;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = s.find('.', start);
    if (dot == std::string_view::npos) {
      labels.push_back(s.substr(start));
      return labels;
    }
    labels.push_back(s.substr(start, dot - start));
    start = dot + 1;
  }
}

}  // namespace

const std::error_category& hostname_category() noexcept {
  static const HostnameCategory category;
  return category;
}

std::error_code make_error_code(hostname_errc e) noexcept {
  return {static_cast<int>(e), hostname_category()};
}

gw::Expected<Hostname> Hostname::parse(std::string_view raw, bool allow_wildcard) {
  if (!raw.empty() && raw.back() == '.') {
    raw.remove_suffix(1);
  }
  if (raw.empty()) {
    return gw::Unexpected{hostname_errc::empty};
  }
  // Before the character check, so `[::1]` and `fe80::1` get the helpful message.
  if (raw.find_first_of(":[]") != std::string_view::npos) {
    return gw::Unexpected{hostname_errc::ip_literal};
  }
  if (raw.size() > kMaxLength) {
    return gw::Unexpected{hostname_errc::too_long};
  }
  const std::string name = ascii::lower(raw);

  const std::vector<std::string_view> labels = split_labels(name);
  bool all_numeric = labels.size() <= 4;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const std::string_view label = labels[i];
    if (label.empty()) {
      return gw::Unexpected{hostname_errc::empty_label};
    }
    if (label.find('*') != std::string_view::npos) {
      if (label != "*" || i != 0 || labels.size() < 2) {
        return gw::Unexpected{hostname_errc::wildcard_position};
      }
      if (!allow_wildcard) {
        return gw::Unexpected{hostname_errc::wildcard_not_allowed};
      }
      all_numeric = false;
      continue;
    }
    if (label.size() > kMaxLabel) {
      return gw::Unexpected{hostname_errc::label_too_long};
    }
    for (char c : label) {
      if (!(is_digit(c) || (c >= 'a' && c <= 'z') || c == '-')) {
        return gw::Unexpected{hostname_errc::bad_character};
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return gw::Unexpected{hostname_errc::label_hyphen};
    }
    all_numeric = all_numeric && is_numeric_part(label);
  }
  if (all_numeric) {
    return gw::Unexpected{hostname_errc::ip_literal};
  }
  if (all_digits(labels.back())) {
    return gw::Unexpected{hostname_errc::all_numeric_tld};
  }
  return Hostname{std::move(name)};
}

std::string_view Hostname::suffix() const noexcept {
  std::string_view s = name_;
  if (is_wildcard()) {
    s.remove_prefix(2);
  }
  return s;
}

bool Hostname::is_under(const Hostname& domain) const noexcept {
  if (domain.is_wildcard()) {
    return false;
  }
  const std::string& d = domain.name_;
  return name_.size() > d.size() + 1 && name_.ends_with(d) &&
         name_[name_.size() - d.size() - 1] == '.';
}

}  // namespace gw::tunnel

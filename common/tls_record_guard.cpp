#include "common/tls_record_guard.hpp"

#include <algorithm>

#include "common/tls_alert.hpp"

namespace gw {

TlsRecordGuard::Verdict TlsRecordGuard::feed(std::span<const std::byte> bytes) noexcept {
  std::size_t i = 0;
  while (verdict_ == Verdict::watching && i < bytes.size()) {
    if (body_left_ > 0) {
      const std::size_t skip = std::min(body_left_, bytes.size() - i);
      body_left_ -= skip;
      i += skip;
      continue;
    }
    header_[header_have_++] = bytes[i++];
    if (header_have_ == header_.size()) {
      header_have_ = 0;
      verdict_ = check_header();
    }
  }
  return verdict_;
}

TlsRecordGuard::Verdict TlsRecordGuard::check_header() noexcept {
  ++records_;
  const auto type = static_cast<std::uint8_t>(header_[0]);
  last_length_ = (static_cast<std::size_t>(header_[3]) << 8) | static_cast<std::size_t>(header_[4]);
  if (type < 20 || type > 23) {
    return Verdict::bad_type;
  }
  if (last_length_ > kMaxRecordBytes) {
    return Verdict::oversize;
  }
  if (type == 23) {
    return Verdict::done;  // its body is opaque ciphertext: nothing left for us to check
  }
  body_left_ = last_length_;
  return Verdict::watching;
}

std::uint8_t TlsRecordGuard::alert_for(Verdict v) noexcept {
  switch (v) {
    case Verdict::oversize:
      return kAlertRecordOverflow;
    case Verdict::bad_type:
      return kAlertUnexpectedMessage;
    case Verdict::watching:
    case Verdict::done:
      break;
  }
  return 0;
}

const char* TlsRecordGuard::reason_for(Verdict v) noexcept {
  switch (v) {
    case Verdict::oversize:
      return "tls_record_overflow";
    case Verdict::bad_type:
      return "tls_bad_record_type";
    case Verdict::watching:
    case Verdict::done:
      break;
  }
  return "";
}

}  // namespace gw

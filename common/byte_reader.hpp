// ByteReader: a bounds- and overflow-checked cursor over untrusted bytes, so parsers never
// index a buffer by hand. Every read either succeeds and advances, or fails and leaves the
// cursor where it was. Deliberately read-only, network byte order only, and without
// exceptions: peer input is data-plane input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace gw {

class ByteReader {
 public:
  ByteReader() = default;
  explicit ByteReader(std::span<const std::byte> data) : data_(data) {}

  std::size_t remaining() const noexcept { return data_.size() - pos_; }
  std::size_t position() const noexcept { return pos_; }
  bool empty() const noexcept { return remaining() == 0; }
  /// The bytes not read yet.
  std::span<const std::byte> rest() const noexcept { return data_.subspan(pos_); }

  /// Reads one byte; false (cursor unchanged) at the end.
  [[nodiscard]] bool read_u8(std::uint8_t& out) noexcept { return read_be(1, out); }
  /// Reads a big-endian u16; false (cursor unchanged) if fewer than 2 bytes remain.
  [[nodiscard]] bool read_u16(std::uint16_t& out) noexcept { return read_be(2, out); }
  /// Reads a big-endian u24; false (cursor unchanged) if fewer than 3 bytes remain.
  [[nodiscard]] bool read_u24(std::uint32_t& out) noexcept { return read_be(3, out); }

  /// Looks at the next byte without consuming it.
  [[nodiscard]] bool peek_u8(std::uint8_t& out) const noexcept {
    if (empty()) {
      return false;
    }
    out = std::to_integer<std::uint8_t>(data_[pos_]);
    return true;
  }

  /// Skips `n` bytes; false (cursor unchanged) if fewer remain.
  [[nodiscard]] bool skip(std::size_t n) noexcept {
    if (n > remaining()) {
      return false;
    }
    pos_ += n;
    return true;
  }

  /// Takes the next `n` bytes as a span; false (cursor unchanged) if fewer remain.
  [[nodiscard]] bool read_bytes(std::size_t n, std::span<const std::byte>& out) noexcept {
    if (n > remaining()) {
      return false;
    }
    out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }

  /// Takes a sub-reader over `n` bytes; false (cursor unchanged) if fewer remain.
  [[nodiscard]] bool read_sub(std::size_t n, ByteReader& sub) noexcept {
    std::span<const std::byte> bytes;
    if (!read_bytes(n, bytes)) {
      return false;
    }
    sub = ByteReader(bytes);
    return true;
  }

  /// Reads a length-prefixed vector (TLS `opaque x<..2^8-1>` and friends) into `sub`, whose
  /// bounds are exactly the vector. False (cursor unchanged) if the prefix or the body don't
  /// fit in what remains: the inner length is checked against this, its parent.
  [[nodiscard]] bool read_prefixed_u8(ByteReader& sub) noexcept { return read_prefixed<1>(sub); }
  [[nodiscard]] bool read_prefixed_u16(ByteReader& sub) noexcept { return read_prefixed<2>(sub); }
  [[nodiscard]] bool read_prefixed_u24(ByteReader& sub) noexcept { return read_prefixed<3>(sub); }

  /// The unread bytes as characters (for names; the caller validates them).
  std::string_view rest_as_chars() const noexcept {
    const auto r = rest();
    return {reinterpret_cast<const char*>(r.data()), r.size()};
  }

 private:
  template <class T>
  bool read_be(std::size_t width, T& out) noexcept {
    if (width > remaining()) {
      return false;
    }
    T value = 0;
    for (const std::byte b : data_.subspan(pos_, width)) {
      value = static_cast<T>((value << 8) | std::to_integer<T>(b));
    }
    pos_ += width;
    out = value;
    return true;
  }

  template <std::size_t Width>
  bool read_prefixed(ByteReader& sub) noexcept {
    const std::size_t start = pos_;
    std::uint32_t length = 0;
    if (!read_be(Width, length) || !read_sub(length, sub)) {
      pos_ = start;
      return false;
    }
    return true;
  }

  std::span<const std::byte> data_;
  std::size_t pos_ = 0;
};

}  // namespace gw

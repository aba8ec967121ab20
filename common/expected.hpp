// gw::Expected<T>: a value or a std::error_code, spelled like std::expected (C++23), which
// g++ 12 lacks. Deliberately minimal: no monadic operations, no custom error types.
#pragma once

#include <cassert>
#include <system_error>
#include <utility>
#include <variant>

namespace gw {

/// Wraps an error code so `return Unexpected{ec};` reads like std::unexpected.
struct Unexpected {
  std::error_code error;
  template <class E>
  requires std::is_error_code_enum_v<E> Unexpected(E e) : error(make_error_code(e)) {}
  Unexpected(std::error_code ec) : error(ec) {}
};

template <class T>
class Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}
  Expected(Unexpected u) : v_(u.error) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & {
    assert(has_value());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(has_value());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(has_value());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  std::error_code error() const {
    assert(!has_value());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, std::error_code> v_;
};

/// Declares the boilerplate that makes `enum class errc` of a folder an error_code enum.
/// Use at global scope: GW_DECLARE_ERRC(gw::sni::errc)
#define GW_DECLARE_ERRC(E) \
  template <>              \
  struct std::is_error_code_enum<E> : std::true_type {};

}  // namespace gw

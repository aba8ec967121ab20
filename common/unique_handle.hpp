// RAII for C handles: a stateless deleter so a unique_ptr to a C object stays one word.
// Deliberately no aliases here: each folder names the handles it uses next to their users.
#pragma once

#include <memory>

namespace gw {

/// Deleter calling the C free function `Free`; ignores null.
template <auto Free>
struct CFree {
  template <class T>
  void operator()(T* p) const noexcept {
    if (p) {
      Free(p);
    }
  }
};

}  // namespace gw

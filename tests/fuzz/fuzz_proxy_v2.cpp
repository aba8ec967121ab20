// libFuzzer harness for the PROXY v2 parser (common/proxy_v2.*): arbitrary bytes must not crash,
// hang or read out of bounds; results are self-consistent; a prefix never disagrees with the
// whole (complete and invalid are final); and a complete header rebuilt by build() parses back
// to the same addresses and TLVs. Deliberately no sockets.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "common/proxy_v2.hpp"

namespace {

void check(bool ok) {
  if (!ok) {
    std::abort();
  }
}

void check_alone(const gw::proxy::ParseResult& r, std::size_t size) {
  using gw::proxy::Status;
  check(static_cast<bool>(r.error) == (r.status == Status::invalid));
  switch (r.status) {
    case Status::complete:
      check(r.consumed >= gw::proxy::kFixedBytes && r.consumed <= size &&
            r.consumed <= gw::proxy::kMaxHeaderBytes);
      break;
    case Status::need_more:
      check(r.need_at_least > size && r.need_at_least <= gw::proxy::kMaxHeaderBytes);
      break;
    case Status::invalid:
      check(r.error.category() == gw::proxy::proxy_category() && !r.error.message().empty());
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using gw::proxy::Status;
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  const auto whole = gw::proxy::parse(input);
  check_alone(whole, size);

  const std::size_t split = size >= 1 ? data[size - 1] % (size + 1) : 0;
  const auto prefix = gw::proxy::parse(input.first(split));
  check_alone(prefix, split);
  if (prefix.status == Status::complete) {
    check(whole.status == Status::complete && whole.consumed == prefix.consumed);
  } else if (prefix.status == Status::invalid) {
    check(whole.status == Status::invalid && whole.error == prefix.error);
  } else if (whole.status == Status::complete) {
    check(whole.consumed >= prefix.need_at_least);
  }

  if (whole.status == Status::complete && whole.header.source && whole.header.destination) {
    const auto rebuilt = gw::proxy::build(whole.header);
    check(static_cast<bool>(rebuilt));
    const auto again = gw::proxy::parse(*rebuilt);
    check(again.status == Status::complete && again.consumed == rebuilt->size());
    check(again.header.authority == whole.header.authority &&
          again.header.unique_id == whole.header.unique_id &&
          again.header.route == whole.header.route &&
          again.header.source->port() == whole.header.source->port());
  }
  return 0;
}

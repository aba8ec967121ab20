// libFuzzer harness for parse_client_hello: arbitrary bytes must not crash, hang or read out of
// bounds, results must be self-consistent, and parsing a prefix (split at a data-derived
// point) must agree with parsing the whole: a prefix's complete or invalid is final, and its
// need_at_least never overshoots where the whole input completes. Deliberately no sockets.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "sni_router/client_hello.hpp"

namespace {

void check(bool ok) {
  if (!ok) {
    std::abort();
  }
}

void check_alone(const gw::sni::ClientHelloResult& r, std::size_t size) {
  using gw::sni::ParseStatus;
  check(static_cast<bool>(r.error) == (r.status == ParseStatus::invalid));
  switch (r.status) {
    case ParseStatus::complete:
      check(r.consumed > 0 && r.consumed <= size);
      break;
    case ParseStatus::need_more:
      check(r.need_at_least > size);
      check(!r.server_name && r.alpn.empty());
      break;
    case ParseStatus::invalid:
      check(r.error.category() == gw::sni::client_hello_category());
      check(!r.error.message().empty());
      (void)gw::sni::alert_for(r.error);
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using gw::sni::ParseStatus;
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  const auto whole = gw::sni::parse_client_hello(input);
  check_alone(whole, size);

  // The split point comes from the last two bytes, so the fuzzer can steer it without
  // disturbing the hello's header at the front.
  std::size_t split = 0;
  if (size >= 2) {
    split = (static_cast<std::size_t>(data[size - 1]) << 8 | data[size - 2]) % (size + 1);
  }
  const auto prefix = gw::sni::parse_client_hello(input.first(split));
  check_alone(prefix, split);
  switch (prefix.status) {
    case ParseStatus::complete:
      check(whole.status == ParseStatus::complete && whole.consumed == prefix.consumed &&
            whole.server_name == prefix.server_name && whole.alpn == prefix.alpn);
      break;
    case ParseStatus::invalid:
      check(whole.status == ParseStatus::invalid && whole.error == prefix.error);
      break;
    case ParseStatus::need_more:
      if (whole.status == ParseStatus::complete) {
        check(whole.consumed >= prefix.need_at_least);
      }
      break;
  }
  return 0;
}

// libFuzzer harness for the record guard (common/tls_record_guard.*), which reads visitors'
// bytes: arbitrary input must not crash or hang, a final verdict never changes, and feeding
// the input in two pieces (split at the first byte's value) gives the verdict of one piece.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "common/tls_record_guard.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = std::as_bytes(std::span(data, size));
  gw::TlsRecordGuard whole;
  const auto verdict = whole.feed(bytes);
  const std::size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  gw::TlsRecordGuard split;
  split.feed(bytes.first(cut));
  if (split.feed(bytes.subspan(cut)) != verdict || split.records() != whole.records()) {
    std::abort();
  }
  if (verdict != gw::TlsRecordGuard::Verdict::watching && whole.feed(bytes) != verdict) {
    std::abort();  // final
  }
  return 0;
}

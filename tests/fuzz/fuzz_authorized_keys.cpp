// libFuzzer harness: parse_authorized_keys on arbitrary bytes must not crash, hang or leak, and
// every loaded key must be internally consistent. Deliberately no KeyStore/file I/O here.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "keys/authorized_keys.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto result = gw::keys::parse_authorized_keys(text, "fuzz");
  for (const auto& key : result.keys) {
    // Invariants the rest of the gateway relies on.
    if (key.fingerprint.size() != 7 + 43 || key.type.empty() || key.blob_base64.empty() ||
        key.loc.empty() || key.options.permit_listen.size() > gw::keys::kMaxPermitListen) {
      std::abort();
    }
    // Re-parsing the same line gives the same key.
    const auto again = gw::keys::parse_authorized_key_line(std::string(key.type) + " " +
                                                           key.blob_base64 + " " + key.comment);
    if (!again || again->fingerprint != key.fingerprint) {
      std::abort();
    }
  }
  return 0;
}

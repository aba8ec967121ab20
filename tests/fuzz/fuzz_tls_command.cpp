// libFuzzer harness: parse_command on arbitrary bytes must not crash or hang, and must return
// exactly one of a command or an error; the forward policy is exercised with the same bytes as
// a bind address. Deliberately no session state here.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "sshd/policy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto r = gw::sshd::parse_command(text);
  if (r.command.has_value() == !r.error.empty()) {
    std::abort();
  }
  if (!r.command && (!r.error.starts_with("snigate: ") || r.error.back() != '\n')) {
    std::abort();
  }

  static const gw::sshd::ForwardPolicy policy{
      *gw::tunnel::Hostname::parse("tunnel.test"), 443, nullptr, {}};
  gw::keys::KeyOptions key;
  key.permit_listen.push_back({"*.alice.test,!admin.alice.test", 443});
  const auto d = gw::sshd::decide_forward({std::string(text), 443}, key, policy);
  if (d.ok != d.refusal.empty() || (!d.ok && d.hostname)) {
    std::abort();
  }
  return 0;
}

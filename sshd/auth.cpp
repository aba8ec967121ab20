#include "sshd/auth.hpp"

#include "keys/source_match.hpp"

namespace gw::sshd {

AuthDecision decide_auth(const keys::KeyStore* store, const AuthAttempt& attempt) {
  AuthDecision d;
  d.key = store ? store->find(attempt.key_type, attempt.blob_base64) : nullptr;
  if (d.key == nullptr) {
    d.reason = "key not in authorized_keys";
    return d;
  }
  const auto& options = d.key->options;
  if (options.expiry_unix && attempt.now > std::chrono::system_clock::time_point(
                                               std::chrono::seconds(*options.expiry_unix))) {
    d.reason = "key expired";
    return d;
  }
  if (std::string why; !keys::source_allowed(options, attempt.peer, &why)) {
    d.reason = why;
    return d;
  }
  switch (attempt.signature) {
    case AuthAttempt::Signature::none:
      d.verdict = AuthDecision::Verdict::probe_ok;  // "would this key do?"
      return d;
    case AuthAttempt::Signature::valid:
      d.verdict = AuthDecision::Verdict::accept;
      return d;
    case AuthAttempt::Signature::wrong:
      break;
  }
  d.reason = "bad signature";
  return d;
}

}  // namespace gw::sshd

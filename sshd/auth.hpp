// The public-key authentication decision, as a pure function: which key (if any) an attempt
// names, and whether it is a probe to answer, a signed attempt to accept, or a refusal and why.
// Deliberately no libssh, no logging and no counting: the session turns libssh's callback into
// an AuthAttempt, logs the refusal and counts it toward the per-connection limit.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <string>
#include <string_view>

#include "keys/key_store.hpp"

namespace gw::sshd {

struct AuthAttempt {
  std::string_view key_type;     ///< "ssh-ed25519", ...
  std::string_view blob_base64;  ///< the offered public key
  enum class Signature { none, valid, wrong } signature = Signature::none;  ///< none: a probe
  boost::asio::ip::address peer;
  std::chrono::system_clock::time_point now;
};

struct AuthDecision {
  enum class Verdict { deny, probe_ok, accept } verdict = Verdict::deny;
  /// The matching authorized_keys entry (null when the key is unknown); points into `store`.
  const keys::AuthorizedKey* key = nullptr;
  /// For the log when denied: "key not in authorized_keys", "key expired", a from= mismatch,
  /// "bad signature".
  std::string reason;
};

/// Decides one attempt against the key snapshot (`store` may be null: no keys). A probe of a
/// listed, unexpired key allowed from `peer` is probe_ok; the same key with a valid signature is
/// accept; everything else is deny with a reason.
AuthDecision decide_auth(const keys::KeyStore* store, const AuthAttempt& attempt);

}  // namespace gw::sshd

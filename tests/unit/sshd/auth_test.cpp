// decide_auth: every verdict and refusal reason, against a key snapshot built from real
// authorized_keys lines (keys/ parses them), with the clock and peer address passed in.
#include "sshd/auth.hpp"

#include <gtest/gtest.h>

#include "keys/authorized_keys.hpp"

namespace gw::sshd {
namespace {

constexpr const char* kBlob =
    "AAAAC3NzaC1lZDI1NTE5AAAAIG6psrgvtU79H73Ql20OThmn+VQE8JHOR96ilb84lgZQ";
constexpr const char* kOther =
    "AAAAC3NzaC1lZDI1NTE5AAAAIB8BjtNsTAhCjuypmN8SEzTDKDOb9jWfNSvtNyqAwMiM";

std::shared_ptr<const keys::KeyStore> store_of(const std::string& text) {
  std::vector<std::string> warnings;
  auto store = keys::KeyStore::from_text(text, "test", &warnings);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  return store;
}

AuthAttempt attempt(const char* blob, AuthAttempt::Signature sig, const char* peer = "192.0.2.7",
                    std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) {
  return AuthAttempt{"ssh-ed25519", blob, sig, boost::asio::ip::make_address(peer), now};
}

TEST(DecideAuth, ProbeOfAListedKeyIsAnsweredAndASignedAttemptAccepted) {
  const auto store = store_of(std::string("ssh-ed25519 ") + kBlob + " alice\n");
  const auto probe = decide_auth(store.get(), attempt(kBlob, AuthAttempt::Signature::none));
  EXPECT_EQ(probe.verdict, AuthDecision::Verdict::probe_ok);
  ASSERT_NE(probe.key, nullptr);
  EXPECT_EQ(probe.key->comment, "alice");
  const auto signed_ok = decide_auth(store.get(), attempt(kBlob, AuthAttempt::Signature::valid));
  EXPECT_EQ(signed_ok.verdict, AuthDecision::Verdict::accept);
}

TEST(DecideAuth, Refusals) {
  const auto store = store_of(std::string("ssh-ed25519 ") + kBlob + " alice\n" +
                              "from=\"10.0.0.0/8\" ssh-ed25519 " + kOther + " bob\n");
  struct Case {
    const char* name;
    AuthAttempt attempt;
    const char* reason;  ///< a substring of the reason
  } cases[] = {
      {"unknown key", attempt("AAAAC3NzaC1lZDI1NTE5AAAAIBBBB", AuthAttempt::Signature::none),
       "not in authorized_keys"},
      {"bad signature", attempt(kBlob, AuthAttempt::Signature::wrong), "bad signature"},
      {"from= mismatch", attempt(kOther, AuthAttempt::Signature::valid, "192.0.2.7"), ""},
  };
  for (const auto& c : cases) {
    const auto d = decide_auth(store.get(), c.attempt);
    EXPECT_EQ(d.verdict, AuthDecision::Verdict::deny) << c.name;
    EXPECT_NE(d.reason.find(c.reason), std::string::npos) << c.name << ": " << d.reason;
    EXPECT_FALSE(d.reason.empty()) << c.name;
  }
  EXPECT_EQ(
      decide_auth(store.get(), attempt(kOther, AuthAttempt::Signature::valid, "10.1.2.3")).verdict,
      AuthDecision::Verdict::accept);
  EXPECT_EQ(decide_auth(nullptr, attempt(kBlob, AuthAttempt::Signature::valid)).verdict,
            AuthDecision::Verdict::deny);
}

TEST(DecideAuth, ExpiredKeyIsRefusedEvenWithAValidSignature) {
  const auto store =
      store_of(std::string("expiry-time=\"20300101\" ssh-ed25519 ") + kBlob + " alice\n");
  const auto before = std::chrono::sys_days{std::chrono::year{2029} / 12 / 31};
  const auto after = std::chrono::sys_days{std::chrono::year{2030} / 1 / 2};
  EXPECT_EQ(
      decide_auth(store.get(), attempt(kBlob, AuthAttempt::Signature::valid, "192.0.2.7", before))
          .verdict,
      AuthDecision::Verdict::accept);
  const auto d =
      decide_auth(store.get(), attempt(kBlob, AuthAttempt::Signature::valid, "192.0.2.7", after));
  EXPECT_EQ(d.verdict, AuthDecision::Verdict::deny);
  EXPECT_EQ(d.reason, "key expired");
}

}  // namespace
}  // namespace gw::sshd

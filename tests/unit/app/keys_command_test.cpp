// `snigate keys add|list|remove` on temporary files: round trip, refusals, atomic rewrites.
#include "app/keys_command.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "keys/authorized_keys.hpp"

namespace gw::app {
namespace {

namespace fs = std::filesystem;

// Two real Ed25519 public keys (ssh-keygen -t ed25519), fingerprints from `ssh-keygen -lf`.
constexpr const char* kAlice =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAT8VQpOGpNEjoVtHZouU8TaxflLWHWIJ52NB7jN1NW4 alice@laptop";
constexpr const char* kAliceFp = "SHA256:pi+QvqCSIdv65AzT1FKpTUdIzeqrsVd3/50qS1aKarA";
constexpr const char* kCarol =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOdTSw/76NbEEMz2nMpkajK8PeDI5c0xm02D1LWzj81 carol";

class KeysCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("snigate-keys-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write(dir_ / "alice.pub", std::string(kAlice) + "\n");
    write(dir_ / "carol.pub", std::string(kCarol) + "\n");
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void write(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }
  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  int run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    args.insert(args.begin() + 1, {"--file", (dir_ / "authorized_keys").string()});
    return run_keys_command(args, out_, err_);
  }

  fs::path dir_;
  std::ostringstream out_, err_;
};

// Proves: add writes a line the gateway's parser reads back with exactly the options asked
// for, list shows it, remove deletes it and only it, keeping comments.
TEST_F(KeysCommand, AddListRemoveRoundTrip) {
  write(dir_ / "authorized_keys", "# team keys\n");
  ASSERT_EQ(run({"add", "--name", "alice", "--allow", "*.alice.test", "--from", "10.0.0.0/8",
                 "--expires", "2030-01-31", (dir_ / "alice.pub").string()}),
            0)
      << err_.str();
  ASSERT_EQ(run({"add", (dir_ / "carol.pub").string()}), 0) << err_.str();
  const auto parsed = keys::parse_authorized_keys(read(dir_ / "authorized_keys"), "ak");
  ASSERT_EQ(parsed.keys.size(), 2u);
  const auto& a = parsed.keys[0];
  EXPECT_EQ(a.fingerprint, kAliceFp);
  EXPECT_EQ(a.comment, "alice");
  ASSERT_EQ(a.options.permit_listen.size(), 1u);
  EXPECT_EQ(a.options.permit_listen[0].host_pattern, "*.alice.test");
  EXPECT_EQ(a.options.permit_listen[0].port, 443);
  EXPECT_EQ(a.options.from, std::vector<std::string>{"10.0.0.0/8"});
  EXPECT_TRUE(a.options.expiry_unix.has_value());
  EXPECT_EQ(parsed.keys[1].comment, "carol");

  ASSERT_EQ(run({"list"}), 0);
  EXPECT_NE(out_.str().find(std::string(kAliceFp) + "  alice  allow=*.alice.test:443"),
            std::string::npos)
      << out_.str();
  ASSERT_EQ(run({"list", "--json"}), 0);
  EXPECT_EQ(out_.str().front(), '[');
  EXPECT_NE(out_.str().find("\"name\":\"carol\""), std::string::npos);

  ASSERT_EQ(run({"remove", "alice"}), 0) << err_.str();
  const std::string after = read(dir_ / "authorized_keys");
  EXPECT_EQ(after.find("alice"), std::string::npos);
  EXPECT_EQ(after.rfind("# team keys\n", 0), 0u) << "comment line kept first";
  EXPECT_NE(after.find(" carol\n"), std::string::npos);
  // Atomic writes leave no temporary files behind.
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
}

// Proves: each refusal has its exit status and a message saying what to do.
TEST_F(KeysCommand, Refusals) {
  ASSERT_EQ(run({"add", (dir_ / "alice.pub").string()}), 0);
  EXPECT_EQ(run({"add", "--name", "again", (dir_ / "alice.pub").string()}), 1);
  EXPECT_NE(err_.str().find("already authorized at"), std::string::npos) << err_.str();
  EXPECT_EQ(run({"add", "--expires", "next week", (dir_ / "carol.pub").string()}), 2);
  EXPECT_NE(err_.str().find("--expires"), std::string::npos);
  EXPECT_EQ(run({"add", "--allow", "a\"b", (dir_ / "carol.pub").string()}), 1);
  EXPECT_EQ(run({"add", (dir_ / "missing.pub").string()}), 1);
  EXPECT_EQ(run({"remove", "nobody"}), 1);
  EXPECT_NE(err_.str().find("snigate keys list"), std::string::npos);
  EXPECT_EQ(run({"frobnicate"}), 2);
  EXPECT_EQ(run({"add", "--bogus", (dir_ / "carol.pub").string()}), 2);
}

// Proves: a name shared by two different keys is ambiguous unless --all.
TEST_F(KeysCommand, AmbiguousNameNeedsAll) {
  ASSERT_EQ(run({"add", "--name", "ops", (dir_ / "alice.pub").string()}), 0);
  ASSERT_EQ(run({"add", "--name", "ops", (dir_ / "carol.pub").string()}), 0);
  EXPECT_EQ(run({"remove", "ops"}), 1);
  EXPECT_NE(err_.str().find("2 different keys"), std::string::npos);
  EXPECT_EQ(run({"remove", "--all", "ops"}), 0);
  EXPECT_TRUE(keys::parse_authorized_keys(read(dir_ / "authorized_keys"), "ak").keys.empty());
}

}  // namespace
}  // namespace gw::app

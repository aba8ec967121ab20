// KeyStore snapshot: lookup by (type, blob), duplicate lines, and the loader's missing-file and
// directory behaviour (temporary files only; no sockets, no clock).
#include "keys/key_store.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace gw::keys {
namespace {

constexpr std::string_view kEdBlob =
    "AAAAC3NzaC1lZDI1NTE5AAAAIMV9gy6hXv6MeBoeSaOpMdXERl4ie+UBLs8F3bg6BHTJ";
constexpr std::string_view kEcBlob =
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOqN13bcT81lciZmNgVnYLI5LmMAN+m421igRRqq/"
    "in0znjHuM+5IZW8Rq28YJNMyNfo6gcT+3iZIp4HiKBMtl0=";

std::string ed_line(std::string_view prefix = "") {
  return std::string(prefix) + "ssh-ed25519 " + std::string(kEdBlob) + " alice\n";
}
std::string ec_line() { return "ecdsa-sha2-nistp256 " + std::string(kEcBlob) + " bob\n"; }

// find() matches type and blob exactly; the first of two identical keys wins with a warning.
TEST(KeyStore, FindAndDuplicates) {
  std::vector<std::string> warnings;
  const auto store =
      KeyStore::from_text(ed_line() + ec_line() + ed_line("restrict "), "ak", &warnings);
  ASSERT_EQ(store->size(), 2u);
  const AuthorizedKey* k = store->find("ssh-ed25519", kEdBlob);
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->comment, "alice");
  EXPECT_EQ(k->loc, "ak:1");
  EXPECT_TRUE(k->options.port_forwarding);
  EXPECT_EQ(store->find("ecdsa-sha2-nistp256", kEcBlob)->comment, "bob");
  EXPECT_EQ(store->find("ssh-rsa", kEdBlob), nullptr);
  EXPECT_EQ(store->find("ssh-ed25519", kEcBlob), nullptr);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("ak:3: line skipped"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("already listed at ak:1"), std::string::npos) << warnings[0];
  // Null warnings pointer is allowed.
  EXPECT_EQ(KeyStore::from_text("junk\n" + ed_line(), "ak", nullptr)->size(), 1u);
}

class KeyStoreFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() /
        ("snigate_keystore_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  std::filesystem::path dir_;
};

// A missing file is an empty store plus a warning that says how to add a key.
TEST_F(KeyStoreFiles, MissingFileWarnsHowToAddAKey) {
  std::vector<std::string> warnings;
  const std::string path = (dir_ / "authorized_keys").string();
  const auto store = load_key_store(path, &warnings);
  EXPECT_EQ(store->size(), 0u);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("add a line `ssh-ed25519 AAAA... name` to " + path), std::string::npos)
      << warnings[0];
}

// A file loads with file:line locations.
TEST_F(KeyStoreFiles, LoadsFile) {
  write("authorized_keys", "# c\n" + ed_line());
  std::vector<std::string> warnings;
  const auto store = load_key_store((dir_ / "authorized_keys").string(), &warnings);
  ASSERT_EQ(store->size(), 1u);
  EXPECT_EQ(store->keys()[0].loc, (dir_ / "authorized_keys").string() + ":2");
  EXPECT_TRUE(warnings.empty());
}

// A directory loads its regular files in name order, skipping dotfiles and backups.
TEST_F(KeyStoreFiles, LoadsDirectory) {
  write("20-bob", ec_line());
  write("10-alice", ed_line());
  write(".hidden", "garbage\n");
  write("10-alice~", "garbage\n");
  std::vector<std::string> warnings;
  const auto store = load_key_store(dir_.string(), &warnings);
  ASSERT_EQ(store->size(), 2u);
  EXPECT_EQ(store->keys()[0].comment, "alice");
  EXPECT_EQ(store->keys()[1].comment, "bob");
  EXPECT_TRUE(warnings.empty()) << warnings.front();
}

}  // namespace
}  // namespace gw::keys

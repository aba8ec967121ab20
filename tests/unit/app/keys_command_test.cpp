// `snigate keys add|list|remove` on temporary files: round trip, refusals, atomic rewrites.
#include "app/keys_command.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>  // compiled once in event_log_test.cpp
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/config.hpp"
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

  static void write(const fs::path& p, const std::string& s) {
    std::ofstream(p, std::ios::binary) << s;
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  int run(std::vector<std::string> args, const std::string& stdin_text = "") {
    args.insert(args.begin() + 1, {"--file", (dir_ / "authorized_keys").string()});
    return run_raw(args, stdin_text);
  }
  int run_raw(const std::vector<std::string>& args, const std::string& stdin_text = "") {
    out_.str("");
    err_.str("");
    std::istringstream in(stdin_text);
    return run_keys_command(args, in, out_, err_);
  }
  std::string pub(const char* name) const { return (dir_ / name).string(); }
  fs::path ak() const { return dir_ / "authorized_keys"; }
  /// No `.name.tmp-XXXXXX` left anywhere under `d`.
  static void expect_no_temporaries(const fs::path& d) {
    for (const auto& e : fs::recursive_directory_iterator(d)) {
      EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
    }
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
  expect_no_temporaries(dir_);
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

constexpr const char* kAliceBlob =
    "AAAAC3NzaC1lZDI1NTE5AAAAIAT8VQpOGpNEjoVtHZouU8TaxflLWHWIJ52NB7jN1NW4";

// Proves: --allow gets :443 unless a port is given (8443 is the default advertised port),
// --from entries join into one from=, a date-only --expires becomes expiry-time at the end of
// that day (23:59:59 UTC), --name replaces the key's comment: the exact line written.
TEST_F(KeysCommand, AddWritesTheExactLine) {
  ASSERT_EQ(run({"add", "--name", "alice", "--allow", "app.alice.test", "--allow", "*.b.test:*",
                 "--allow", "c.test:8443", "--from", "10.0.0.0/8,!10.1.0.0/16", "--from",
                 "2001:db8::/32", "--expires", "2030-01-31", pub("alice.pub")}),
            0)
      << err_.str();
  EXPECT_EQ(read(ak()),
            std::string("permitlisten=\"app.alice.test:443\",permitlisten=\"*.b.test:*\","
                        "permitlisten=\"c.test:8443\",from=\"10.0.0.0/8,!10.1.0.0/16,"
                        "2001:db8::/32\",expiry-time=\"20300131235959\" ssh-ed25519 ") +
                kAliceBlob + " alice\n");
  EXPECT_EQ(out_.str(), std::string("added ") + kAliceFp + " alice to " + ak().string() + "\n");
  EXPECT_EQ(err_.str(), "");
}

// Proves: each bad --allow/--from/--expires is refused with its exact one-line message and
// exit status, and nothing is written.
TEST_F(KeysCommand, BadPatternsRefusedWithExactMessages) {
  struct Case {
    const char* label;
    std::vector<std::string> options;
    int status;
    std::string message;
  } cases[] = {
      {"quote smuggles an option",
       {"--allow", "a.test:443\",restrict,x=\"y"},
       1,
       "snigate: keys add: --allow a.test:443\\\",restrict,x=\\\"y: quotes, backslashes, spaces "
       "and control characters are not allowed\n"},
      {"space",
       {"--allow", "a b.test"},
       1,
       "snigate: keys add: --allow a b.test: quotes, backslashes, spaces and control characters "
       "are not allowed\n"},
      {"underscore can never match",
       {"--allow", "app_x.test"},
       1,
       "snigate: keys add: --allow app_x.test: 'app_x.test' can never match a hostname "
       "(letters, digits, '-', '.', and the wildcards * ?)\n"},
      {"no host",
       {"--allow", ":443"},
       1,
       "snigate: keys add: --allow :443: no host pattern (e.g. app.example.com or "
       "'*.example.com')\n"},
      {"empty list entry",
       {"--allow", "a.test,,b.test"},
       1,
       "snigate: keys add: --allow a.test,,b.test: empty entry in the pattern list\n"},
      {"port out of range",
       {"--allow", "a.test:70000"},
       1,
       "snigate: keys add: --allow a.test:70000: permitlisten must be \"host:port\" with a "
       "port number or *\n"},
      {"port name",
       {"--allow", "a.test:https"},
       1,
       "snigate: keys add: --allow a.test:https: permitlisten must be \"host:port\" with a "
       "port number or *\n"},
      {"cidr with host bits",
       {"--from", "10.0.0.1/8"},
       1,
       "snigate: keys add: --from 10.0.0.1/8: '10.0.0.1/8' is not a network: give "
       "address/length with no bits set past the length (e.g. 203.0.113.0/24 or "
       "2001:db8::/32)\n"},
      {"negated bad cidr",
       {"--from", "*,!10.0.0.0/33"},
       1,
       "snigate: keys add: --from *,!10.0.0.0/33: '!10.0.0.0/33' is not a network: give "
       "address/length with no bits set past the length (e.g. 203.0.113.0/24 or "
       "2001:db8::/32)\n"},
      {"from trailing comma",
       {"--from", "10.0.0.0/8,"},
       1,
       "snigate: keys add: --from 10.0.0.0/8,: empty entry in the pattern list\n"},
      {"bare negation",
       {"--from", "!"},
       1,
       "snigate: keys add: --from !: empty entry in the pattern list\n"},
      {"impossible date",
       {"--expires", "2027-02-30"},
       2,
       "snigate: keys add: --expires 2027-02-30: expected a date YYYY-MM-DD (UTC), or "
       "YYYYMMDD[HHMM[SS]] (see snigate keys --help)\n"},
      {"words for a date",
       {"--expires", "next week"},
       2,
       "snigate: keys add: --expires next week: expected a date YYYY-MM-DD (UTC), or "
       "YYYYMMDD[HHMM[SS]] (see snigate keys --help)\n"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args{"add"};
    args.insert(args.end(), c.options.begin(), c.options.end());
    args.push_back(pub("carol.pub"));
    EXPECT_EQ(run(args), c.status) << c.label;
    EXPECT_EQ(err_.str(), c.message) << c.label;
    EXPECT_FALSE(fs::exists(ak())) << c.label << ": nothing may be written";
  }
}

// Proves: usage errors exit 2 with exactly one line; --help prints the usage and exits 0.
TEST_F(KeysCommand, UsageErrorsAreOneLine) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate"},
      {"add", "--bogus", "x.pub"},
      {"add", "--json", "x.pub"},
      {"add", "--name", "a", "--name", "b", "x.pub"},
      {"add", "--file", "a", "--state-dir", "b", "x.pub"},
      {"add", "--allow"},
      {"add"},
      {"add", "a.pub", "b.pub"},
      {"list", "extra"},
      {"list", "--json=yes"},
      {"remove"},
      {"remove", "--allow", "x", "alice"},
      {"remove", ""},
      {"edit", "--name", "x", ""},
  };
  for (const auto& args : cases) {
    EXPECT_EQ(run_raw(args), 2) << ::testing::PrintToString(args);
    const std::string e = err_.str();
    EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 1) << e;
    EXPECT_TRUE(e.starts_with("snigate: keys")) << e;
    EXPECT_TRUE(e.ends_with(" (see snigate keys --help)\n")) << e;
  }
  EXPECT_EQ(run_raw({"--help"}), 0);
  EXPECT_TRUE(out_.str().starts_with("usage: snigate keys add")) << out_.str();
  EXPECT_EQ(run_raw({"remove", "--help"}), 0);
}

// Proves: a key already present is refused naming its file:line, even when its line there has
// other options, and even when it is in another file of a key directory.
TEST_F(KeysCommand, DuplicateRefusedNamingItsLine) {
  write(ak(), "# team\n\nrestrict ssh-ed25519 " + std::string(kAliceBlob) + " old-alice\n");
  EXPECT_EQ(run({"add", "--name", "alice", pub("alice.pub")}), 1);
  EXPECT_EQ(err_.str(), std::string("snigate: keys add: this key (") + kAliceFp +
                            ") is already authorized at " + ak().string() +
                            ":3 (change its options with snigate keys edit)\n");

  const fs::path d = dir_ / "keys.d";
  fs::create_directories(d);
  write(d / "team", std::string(kAlice) + "\n");
  out_.str("");
  err_.str("");
  std::istringstream none;
  EXPECT_EQ(run_keys_command({"add", "--file", d.string(), pub("alice.pub")}, none, out_, err_), 1);
  EXPECT_NE(err_.str().find("already authorized at " + (d / "team").string() + ":1"),
            std::string::npos)
      << err_.str();
  EXPECT_FALSE(fs::exists(d / "snigate-keys"));
}

// Proves: comments, blank lines, CRLF lines, lines the gateway skips and a missing final
// newline survive add and remove byte for byte.
TEST_F(KeysCommand, UnrelatedBytesPreserved) {
  const std::string carol_line = std::string(kCarol) + "\n";
  const std::string before =
      "# managed by hand and by snigate\r\n"
      "\n"
      "   # indented comment\n" +
      carol_line + "no-such-option ssh-ed25519 " + kAliceBlob + " skipped-by-gateway\n" + "\t\n" +
      "ssh-ed25519 AAAA broken line, kept";
  write(ak(), before);
  ASSERT_EQ(run({"add", "--name", "alice", pub("alice.pub")}), 0) << err_.str();
  const std::string added = read(ak());
  EXPECT_EQ(added, before + "\nssh-ed25519 " + kAliceBlob + " alice\n");
  ASSERT_EQ(run({"remove", "alice"}), 0) << err_.str();
  EXPECT_EQ(read(ak()), before + "\n");
  ASSERT_EQ(run({"remove", "carol"}), 0) << err_.str();
  std::string without_carol = before + "\n";
  without_carol.erase(without_carol.find(carol_line), carol_line.size());
  EXPECT_EQ(read(ak()), without_carol);
  expect_no_temporaries(dir_);
}

// Proves: the last line keeps its missing newline when another line is removed.
TEST_F(KeysCommand, RemoveKeepsMissingFinalNewline) {
  write(ak(), std::string(kAlice) + "\n# last, no newline");
  ASSERT_EQ(run({"remove", kAliceFp}), 0) << err_.str();
  EXPECT_EQ(read(ak()), "# last, no newline");
  EXPECT_EQ(out_.str(),
            std::string("removed ") + kAliceFp + " alice@laptop (" + ak().string() + ":1)\n");
}

// Proves: a new file is created 0600 in a new 0700 directory; an existing file keeps its mode;
// a symlinked authorized_keys stays a symlink and its target gets the line.
TEST_F(KeysCommand, ModesAndSymlinks) {
  const fs::path state = dir_ / "state";
  std::istringstream none;
  ASSERT_EQ(
      run_keys_command({"add", "--state-dir", state.string(), pub("alice.pub")}, none, out_, err_),
      0)
      << err_.str();
  struct stat st {};
  ASSERT_EQ(::stat((state / "authorized_keys").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat(state.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  write(ak(), "# shared\n");
  fs::permissions(ak(), fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  ASSERT_EQ(run({"add", pub("carol.pub")}), 0) << err_.str();
  ASSERT_EQ(::stat(ak().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);

  const fs::path real = dir_ / "real_keys";
  write(real, "# real\n");
  const fs::path link = dir_ / "linked_keys";
  fs::create_symlink(real, link);
  out_.str("");
  ASSERT_EQ(run_keys_command({"add", "--file", link.string(), pub("alice.pub")}, none, out_, err_),
            0)
      << err_.str();
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(read(real), "# real\nssh-ed25519 " + std::string(kAliceBlob) + " alice@laptop\n");
  expect_no_temporaries(dir_);
}

// Proves: with a directory, add writes DIR/snigate-keys (and says so), list covers every file,
// remove edits the file that holds the key, and a key repeated in two files goes from both.
TEST_F(KeysCommand, KeyDirectory) {
  const fs::path d = dir_ / "keys.d";
  fs::create_directories(d);
  write(d / "team", "# team\n" + std::string(kAlice) + "\n");
  write(d / ".hidden", std::string(kCarol) + "\n");  // dotfiles are not key files
  std::istringstream none;
  auto run_d = [&](std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    args.insert(args.begin() + 1, {"--file", d.string()});
    return run_keys_command(args, none, out_, err_);
  };
  ASSERT_EQ(run_d({"add", pub("carol.pub")}), 0) << err_.str();
  EXPECT_NE(out_.str().find("to " + (d / "snigate-keys").string() +
                            " (--file is a directory: keys added here go to its snigate-keys)"),
            std::string::npos)
      << out_.str();
  ASSERT_EQ(run_d({"list"}), 0);
  EXPECT_NE(out_.str().find("alice@laptop"), std::string::npos);
  EXPECT_NE(out_.str().find((d / "snigate-keys").string() + ":1"), std::string::npos);
  write(d / "more", std::string(kAlice) + "\n");
  ASSERT_EQ(run_d({"remove", "alice@laptop"}), 0) << err_.str();  // one key, two lines
  EXPECT_EQ(read(d / "team"), "# team\n");
  EXPECT_EQ(read(d / "more"), "");
  EXPECT_EQ(read(d / ".hidden"), std::string(kCarol) + "\n");
  expect_no_temporaries(dir_);
}

// Proves: `list --json` is valid JSON with the documented fields, whatever bytes a comment
// holds (quotes, control characters, invalid UTF-8), and skipped lines are warned about.
TEST_F(KeysCommand, ListJsonParses) {
  write(ak(),
        "permitlisten=\"app.alice.test:443\",from=\"10.0.0.0/8\",expiry-time=\"20300131\" "
        "ssh-ed25519 " +
            std::string(kAliceBlob) + " al\"ice\x01\xff caf\xc3\xa9\n" + "bogus-option " + kCarol +
            "\n" + "restrict " + kCarol + "\n");
  ASSERT_EQ(run({"list", "--json"}), 0);
  boost::system::error_code ec;
  const auto doc = boost::json::parse(out_.str(), ec);
  ASSERT_FALSE(ec) << out_.str();
  const auto& arr = doc.as_array();
  ASSERT_EQ(arr.size(), 2u);
  const auto& a = arr[0].as_object();
  EXPECT_EQ(a.at("fingerprint").as_string(), kAliceFp);
  EXPECT_EQ(a.at("name").as_string(), "al\"ice\x01\xef\xbf\xbd caf\xc3\xa9");
  EXPECT_EQ(a.at("allow").as_array().at(0).as_string(), "app.alice.test:443");
  EXPECT_EQ(a.at("from").as_array().at(0).as_string(), "10.0.0.0/8");
  EXPECT_EQ(a.at("expires").as_string(), "2030-01-31T00:00:00Z");
  EXPECT_EQ(a.at("location").as_string(), ak().string() + ":1");
  EXPECT_TRUE(a.at("port_forwarding").as_bool());
  EXPECT_FALSE(arr[1].as_object().at("port_forwarding").as_bool());
  EXPECT_TRUE(arr[1].as_object().at("expires").is_null());
  EXPECT_NE(err_.str().find(ak().string() + ":2: line skipped: unknown key option"),
            std::string::npos)
      << err_.str();

  write(ak(), "# nothing yet\n");
  ASSERT_EQ(run({"list", "--json"}), 0);
  EXPECT_EQ(out_.str(), "[]\n");
}

// Proves: `add -` reads standard input; private keys, several keys, and keys that carry
// options are refused; a past --expires is added with a warning.
TEST_F(KeysCommand, StandardInputAndInputChecks) {
  ASSERT_EQ(run({"add", "--name", "from-stdin", "-"}, "# a comment\n\n" + std::string(kAlice)), 0)
      << err_.str();
  EXPECT_NE(read(ak()).find(" from-stdin\n"), std::string::npos);
  EXPECT_EQ(run({"add", "-"}, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n"), 1);
  EXPECT_EQ(err_.str(),
            "snigate: keys add: - is a private key; give the public one (the .pub "
            "file)\n");
  EXPECT_EQ(run({"add", "-"}, std::string(kAlice) + "\n" + kCarol + "\n"), 1);
  EXPECT_EQ(err_.str(), "snigate: keys add: - holds 2 lines; give one public key at a time\n");
  EXPECT_EQ(run({"add", "-"}, "restrict " + std::string(kCarol)), 1);
  EXPECT_EQ(err_.str(),
            "snigate: keys add: -: give a plain public key; options come from "
            "--allow/--from/--expires\n");
  EXPECT_EQ(run({"add", "-"}, ""), 1);
  EXPECT_EQ(err_.str(), "snigate: keys add: -: no public key in it\n");
  EXPECT_EQ(run({"add", "--expires", "2001-01-01", pub("carol.pub")}), 0) << err_.str();
  EXPECT_EQ(err_.str(),
            "snigate: keys add: warning: --expires 2001-01-01 is in the past: the key is "
            "refused\n");
}

// Proves: a host-name --from is accepted (OpenSSH allows it) with a warning that it never
// matches, since the gateway does no DNS.
TEST_F(KeysCommand, HostNameFromWarns) {
  ASSERT_EQ(run({"add", "--from", "*.corp.test,10.0.0.0/8", pub("carol.pub")}), 0) << err_.str();
  EXPECT_EQ(err_.str(),
            "snigate: keys add: warning: --from *.corp.test: host names never match (the gateway "
            "compares client addresses, without DNS); use addresses or CIDRs\n");
}

// Proves: removing by an unknown fingerprint or name says which, and changes nothing.
TEST_F(KeysCommand, RemoveNothingMatches) {
  write(ak(), std::string(kAlice) + "\n");
  EXPECT_EQ(run({"remove", "SHA256:nope"}), 1);
  EXPECT_EQ(err_.str(),
            "snigate: keys remove: no key with fingerprint SHA256:nope (see snigate keys list)\n");
  EXPECT_EQ(run({"remove", "bob"}), 1);
  EXPECT_EQ(err_.str(), "snigate: keys remove: no key with name bob (see snigate keys list)\n");
  EXPECT_EQ(read(ak()), std::string(kAlice) + "\n");
}

// Proves: --allow patterns no requested name can match are refused like requested names
// (labels, IP literals, trailing dot, negations alone, ports other than 443/*/advertised),
// each with its exact line, and nothing is written.
TEST_F(KeysCommand, AllowPatternsThatCanNeverMatchAreRefused) {
  const struct {
    const char* pattern;
    std::string message;
  } cases[] = {
      {"foo..bar.com",
       "'foo..bar.com' can never match a requested name (hostname has an empty label)"},
      {"10.0.0.1",
       "'10.0.0.1' can never match a requested name (IP addresses are not hostnames: use a DNS "
       "name)"},
      {"*.", "'*.' can never match: requested names have no trailing dot (drop it)"},
      {"app.example.com.",
       "'app.example.com.' can never match: requested names have no trailing dot (drop it)"},
      {"-app.example.com",
       "'-app.example.com' can never match a requested name (hostname labels may not start or "
       "end with a hyphen)"},
      {"app.123",
       "'app.123' can never match a requested name (the last label of a hostname may "
       "not be all digits)"},
      {"!evil.com",
       "only negations: a list needs a name it allows, e.g. '*.example.com,!evil.com'"},
      {"!a.test,!b.test",
       "only negations: a list needs a name it allows, e.g. '*.example.com,!a.test'"},
      {"app.example.com:80",
       "port 80 never matches: forwards ask for port 443 or the advertised port 8443; leave the "
       "port out (443) or give :*"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(run({"add", "--allow", c.pattern, pub("carol.pub")}), 1) << c.pattern;
    EXPECT_EQ(err_.str(),
              std::string("snigate: keys add: --allow ") + c.pattern + ": " + c.message + "\n");
    EXPECT_FALSE(fs::exists(ak())) << c.pattern;
  }
}

// Proves: patterns that can match are kept as given (wildcards standing for labels or for
// nothing, negations after a positive entry), and a bare '*' is accepted with a warning.
TEST_F(KeysCommand, AllowPatternsThatCanMatchAreKept) {
  ASSERT_EQ(run({"add", "--allow", "*.alice.test,!evil.alice.test", "--allow", "app?.test:*",
                 "--allow", "api*.b.test", pub("alice.pub")}),
            0)
      << err_.str();
  EXPECT_EQ(err_.str(), "");
  const auto k = keys::parse_authorized_keys(read(ak()), "ak").keys.at(0);
  ASSERT_EQ(k.options.permit_listen.size(), 3u);
  EXPECT_EQ(k.options.permit_listen[0].host_pattern, "*.alice.test,!evil.alice.test");
  EXPECT_EQ(run({"add", "--allow", "*", pub("carol.pub")}), 0) << err_.str();
  EXPECT_EQ(err_.str(),
            "snigate: keys add: warning: --allow *: '*' lets this key claim any name not yet "
            "taken, other users' too; give a zone like '*.alice.example.com' unless you mean "
            "that\n");
}

// Proves: a date-only --expires (either spelling) is the end of that day, UTC; a time is kept.
TEST_F(KeysCommand, DateOnlyExpiresIsTheEndOfThatDay) {
  ASSERT_EQ(run({"add", "--expires", "20270630", pub("alice.pub")}), 0) << err_.str();
  ASSERT_EQ(run({"add", "--expires", "202706301200", pub("carol.pub")}), 0) << err_.str();
  ASSERT_EQ(run({"list", "--json"}), 0);
  EXPECT_NE(out_.str().find("\"expires\":\"2027-06-30T23:59:59Z\""), std::string::npos)
      << out_.str();
  EXPECT_NE(out_.str().find("\"expires\":\"2027-06-30T12:00:00Z\""), std::string::npos);
}

// Proves: `keys add <(cat k.pub)` works: /dev/fd/N of a pipe is read as a stream.
TEST_F(KeysCommand, AddReadsAPipeByPath) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const std::string line = std::string(kAlice) + "\n";
  ASSERT_EQ(::write(fds[1], line.data(), line.size()), static_cast<ssize_t>(line.size()));
  ::close(fds[1]);
  const int status = run({"add", "/dev/fd/" + std::to_string(fds[0])});
  ::close(fds[0]);
  ASSERT_EQ(status, 0) << err_.str();
  EXPECT_NE(read(ak()).find(kAliceBlob), std::string::npos);
  EXPECT_EQ(run({"add", pub("nope.pub")}), 1);
  EXPECT_EQ(err_.str(), "snigate: keys add: " + pub("nope.pub") + ": no such file\n");
}

// Proves: edit replaces only the options given, keeps the others (restrict, port-forwarding,
// unrelated bytes) and the line's place, can rename and drop the expiry, and refuses unknown
// keys and empty edits.
TEST_F(KeysCommand, EditChangesOnlyWhatIsGiven) {
  write(ak(),
        "# team\r\nrestrict,port-forwarding,permitlisten=\"a.alice.test:443\","
        "from=\"10.0.0.0/8\",expiry-time=\"20300101\" ssh-ed25519 " +
            std::string(kAliceBlob) + " alice\r\n" + kCarol + "\n");
  ASSERT_EQ(
      run({"edit", "--allow", "*.alice.test", "--allow", "x.test", "--name", "alice2", "alice"}), 0)
      << err_.str();
  EXPECT_EQ(read(ak()),
            "# team\r\nrestrict,port-forwarding,from=\"10.0.0.0/8\","
            "expiry-time=\"20300101\",permitlisten=\"*.alice.test:443\","
            "permitlisten=\"x.test:443\" ssh-ed25519 " +
                std::string(kAliceBlob) + " alice2\r\n" + kCarol + "\n");
  EXPECT_EQ(out_.str(), std::string("edited ") + kAliceFp + " alice2 (" + ak().string() +
                            ":2): allow=*.alice.test:443,x.test:443 "
                            "expires=2030-01-01T00:00:00Z; its live sessions keep the names "
                            "still allowed\n");
  ASSERT_EQ(run({"edit", "--expires", "never", "--from", "192.0.2.0/24", kAliceFp}), 0)
      << err_.str();
  const auto k = keys::parse_authorized_keys(read(ak()), "ak").keys.at(0);
  EXPECT_FALSE(k.options.expiry_unix.has_value());
  EXPECT_EQ(k.options.from, std::vector<std::string>{"192.0.2.0/24"});
  EXPECT_TRUE(k.options.restricted);
  EXPECT_TRUE(k.options.port_forwarding);
  EXPECT_EQ(k.comment, "alice2");

  EXPECT_EQ(run({"edit", "--name", "x", "bob"}), 1);
  EXPECT_EQ(err_.str(), "snigate: keys edit: no key with name bob (see snigate keys list)\n");
  EXPECT_EQ(run({"edit", "carol"}), 2);
  EXPECT_EQ(err_.str(),
            "snigate: keys edit: nothing to change: give --name, --allow, --from or --expires "
            "(see snigate keys --help)\n");
  EXPECT_EQ(run({"edit", "--allow", "10.0.0.1", "carol"}), 1);
  EXPECT_NE(read(ak()).find(std::string(kCarol) + "\n"), std::string::npos) << "unchanged";
}

// Proves: keys reads where the keys are like serve does: SNIGATE_STATE_DIR and
// SNIGATE_AUTHORIZED_KEYS, a --config file (or SNIGATE_CONFIG), a flag over the environment,
// and a bad setting is one line with exit 2.
TEST_F(KeysCommand, WhereComesFromTheSharedSettings) {
  const fs::path state = dir_ / "state";
  fs::create_directories(state);
  write(state / "authorized_keys", std::string(kAlice) + "\n");
  write(dir_ / "other", std::string(kCarol) + "\n");
  write(dir_ / "gw.toml", "state_dir = \"" + state.string() + "\"\n");
  auto list_with = [&](const Environment& env, std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    std::istringstream none;
    args.insert(args.begin(), "list");
    return run_keys_command(args, env, read_text_file, none, out_, err_);
  };
  ASSERT_EQ(list_with({{"SNIGATE_STATE_DIR", state.string()}}, {}), 0) << err_.str();
  EXPECT_NE(out_.str().find("alice@laptop"), std::string::npos) << out_.str();
  ASSERT_EQ(list_with({{"SNIGATE_AUTHORIZED_KEYS", (dir_ / "other").string()}}, {}), 0);
  EXPECT_NE(out_.str().find("  carol  "), std::string::npos) << out_.str();
  ASSERT_EQ(list_with({}, {"--config", (dir_ / "gw.toml").string()}), 0) << err_.str();
  EXPECT_NE(out_.str().find("alice@laptop"), std::string::npos) << out_.str();
  ASSERT_EQ(list_with({{"SNIGATE_CONFIG", (dir_ / "gw.toml").string()}}, {}), 0);
  EXPECT_NE(out_.str().find("alice@laptop"), std::string::npos) << out_.str();
  ASSERT_EQ(list_with({{"SNIGATE_STATE_DIR", "/nonexistent"}},
                      {"--authorized-keys", (dir_ / "other").string()}),
            0);
  EXPECT_NE(out_.str().find("  carol  "), std::string::npos) << out_.str();
  EXPECT_EQ(list_with({{"SNIGATE_STATE_DIR", ""}}, {"--state-dir="}), 2);
  EXPECT_EQ(err_.str(), "snigate: --state-dir: must not be empty\n");
  EXPECT_EQ(list_with({{"SNIGATE_THREADS", "many"}}, {}), 2);
  EXPECT_EQ(err_.str(),
            "snigate: SNIGATE_THREADS: expected a number from 0 (one per core) to 1024, got "
            "\"many\"\n");
}

}  // namespace
}  // namespace gw::app

// Host key loading and first-start generation with libssh's PKI API.
#include "keys/host_keys.hpp"

#include <libssh/libssh.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>

#include "common/unique_handle.hpp"

namespace gw::keys {
namespace {

using KeyPtr = std::unique_ptr<ssh_key_struct, CFree<&ssh_key_free>>;

void free_cstring(char* p) { ssh_string_free_char(p); }
using CStringPtr = std::unique_ptr<char, CFree<&free_cstring>>;
void free_hash(unsigned char* p) { ssh_clean_pubkey_hash(&p); }
using HashPtr = std::unique_ptr<unsigned char, CFree<&free_hash>>;

[[noreturn]] void fail(const std::string& path, const std::string& why) {
  throw std::runtime_error(path + ": " + why);
}

std::string fingerprint_of(ssh_key key, const std::string& path) {
  unsigned char* raw = nullptr;
  size_t len = 0;
  if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &raw, &len) != SSH_OK) {
    fail(path, "cannot hash host key");
  }
  HashPtr hash{raw};
  CStringPtr text{ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash.get(), len)};
  if (!text) {
    fail(path, "cannot format host key fingerprint");
  }
  return text.get();
}

/// Reads the private key at `info.private_key_path` and fills in its public line and
/// fingerprint.
void read_key(HostKeyInfo& info) {
  ssh_key raw = nullptr;
  if (ssh_pki_import_privkey_file(info.private_key_path.c_str(), nullptr, nullptr, nullptr, &raw) !=
      SSH_OK) {
    fail(info.private_key_path, "cannot read host key (not an OpenSSH private key?)");
  }
  KeyPtr key{raw};
  char* b64 = nullptr;
  if (ssh_pki_export_pubkey_base64(key.get(), &b64) != SSH_OK) {
    fail(info.private_key_path, "cannot export host public key");
  }
  CStringPtr b64_owner{b64};
  info.public_line =
      std::string(ssh_key_type_to_char(ssh_key_type(key.get()))) + " " + b64 + " snigate-host-key";
  info.fingerprint = fingerprint_of(key.get(), info.private_key_path);
}

}  // namespace

std::string host_key_path(const std::string& state_dir) {
  return (std::filesystem::path(state_dir) / "ssh_host_ed25519_key").string();
}

std::optional<HostKeyInfo> load_host_key(const std::string& state_dir) {
  HostKeyInfo info;
  info.private_key_path = host_key_path(state_dir);
  std::error_code ec;
  if (!std::filesystem::exists(info.private_key_path, ec)) {
    if (ec && ec != std::errc::no_such_file_or_directory) {
      fail(info.private_key_path, ec.message());
    }
    return std::nullopt;
  }
  read_key(info);
  return info;
}

HostKeyInfo load_or_generate_host_key(const std::string& state_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) {
    fail(state_dir, "cannot create state dir: " + ec.message());
  }
  HostKeyInfo info;
  info.private_key_path = host_key_path(state_dir);
  const std::string pub_path = info.private_key_path + ".pub";

  if (!fs::exists(info.private_key_path)) {
    ssh_key raw = nullptr;
    if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &raw) != SSH_OK) {
      fail(info.private_key_path, "cannot generate an Ed25519 key");
    }
    KeyPtr key{raw};
    // Owner-only from the start: the umask applies to the file libssh creates.
    const mode_t old = ::umask(077);
    const int rc = ssh_pki_export_privkey_file(key.get(), nullptr, nullptr, nullptr,
                                               info.private_key_path.c_str());
    ::umask(old);
    if (rc != SSH_OK) {
      fail(info.private_key_path, "cannot write host key");
    }
    info.generated = true;
  }
  read_key(info);
  std::ofstream pub(pub_path, std::ios::trunc);
  pub << info.public_line << "\n";
  if (!pub) {
    fail(pub_path, "cannot write host public key");
  }
  return info;
}

}  // namespace gw::keys

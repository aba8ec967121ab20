// Host keys: load the gateway's Ed25519 host key from the state dir, generating it (OpenSSH
// format, so `ssh-keygen -lf` reads it) on first start; or only load it (`snigate hostkey`,
// which must never create a key the running gateway does not use). Deliberately no RSA yet.
#pragma once

#include <optional>
#include <string>

namespace gw::keys {

struct HostKeyInfo {
  std::string private_key_path;  ///< OpenSSH-format private key, mode 0600
  std::string public_line;       ///< "ssh-ed25519 AAAA... snigate" as written to the .pub file
  std::string fingerprint;       ///< "SHA256:..." as ssh-keygen -lf prints it
  bool generated = false;        ///< true when this call created the key
};

/// Loads STATE_DIR/ssh_host_ed25519_key, creating the directory and the key if missing.
/// Throws std::runtime_error "path: reason" when the key can't be read or written (control
/// plane: start-up only).
HostKeyInfo load_or_generate_host_key(const std::string& state_dir);

/// The path of the host key in `state_dir` (whether or not it exists).
std::string host_key_path(const std::string& state_dir);

/// Loads STATE_DIR/ssh_host_ed25519_key without creating or writing anything; nullopt when
/// the file does not exist. Throws std::runtime_error "path: reason" when it exists but
/// can't be read.
std::optional<HostKeyInfo> load_host_key(const std::string& state_dir);

}  // namespace gw::keys

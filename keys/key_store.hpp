// KeyStore: an immutable snapshot of the authorized keys, looked up by (type, blob) during
// authentication without I/O. Deliberately no reload, no file watching and no expiry filtering
// here: a reload builds a new snapshot and swaps the shared_ptr; auth checks is_expired() with
// its own clock.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "keys/authorized_keys.hpp"

namespace gw::keys {

class KeyStore {
 public:
  /// Builds a snapshot from one file's text. Bad lines are skipped and described in
  /// `*warnings` ("file:line: reason") when `warnings` is not null; a key repeated on a later
  /// line is skipped with a warning (the first line wins, as its options are the ones applied).
  static std::shared_ptr<const KeyStore> from_text(std::string_view content,
                                                   std::string_view file_name,
                                                   std::vector<std::string>* warnings);

  /// The key with this type and base64 blob (exact string compare), or nullptr.
  const AuthorizedKey* find(std::string_view type, std::string_view blob_base64) const;

  std::size_t size() const noexcept { return keys_.size(); }
  const std::vector<AuthorizedKey>& keys() const noexcept { return keys_; }

 private:
  friend std::shared_ptr<const KeyStore> load_key_store(const std::string& path,
                                                        std::vector<std::string>* warnings);
  KeyStore() = default;
  void add(KeyFileResult parsed, std::vector<std::string>* warnings);

  std::vector<AuthorizedKey> keys_;
  std::unordered_map<std::string, std::size_t> index_;  // "type blob" -> keys_ position
};

/// Control plane: reads `path`, a file or a directory whose regular files (sorted by name,
/// skipping dotfiles and `~` backups) are read in turn. A missing path gives an empty store and
/// a warning saying how to add a key. Throws std::runtime_error("path: reason") if the path
/// exists but cannot be read.
std::shared_ptr<const KeyStore> load_key_store(const std::string& path,
                                               std::vector<std::string>* warnings);

/// The files load_key_store reads for `path`: `path` itself unless it is a directory, else the
/// directory's regular files sorted by name, skipping dotfiles and `~` backups (so temporary
/// files named `.x.tmp-*` are never read half-written). Throws std::filesystem::filesystem_error
/// when the directory cannot be listed.
std::vector<std::string> key_files(const std::string& path);

/// The whole content of one key file. Throws std::runtime_error("path: cannot open: reason")
/// when it cannot be read: an unreadable file must never look like an empty one.
std::string read_key_file(const std::string& path);

}  // namespace gw::keys

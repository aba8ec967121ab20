// KeyStore snapshot and its control-plane loader; see key_store.hpp. Deliberately synchronous
// and throwing: it runs at start-up and on reload, never on an I/O thread.
#include "keys/key_store.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace gw::keys {
namespace {

std::string index_key(std::string_view type, std::string_view blob) {
  std::string k;
  k.reserve(type.size() + 1 + blob.size());
  k.append(type).push_back(' ');
  k.append(blob);
  return k;
}

}  // namespace

void KeyStore::add(KeyFileResult parsed, std::vector<std::string>* warnings) {
  if (warnings) {
    warnings->insert(warnings->end(), parsed.warnings.begin(), parsed.warnings.end());
  }
  for (auto& key : parsed.keys) {
    auto [it, inserted] = index_.try_emplace(index_key(key.type, key.blob_base64), keys_.size());
    if (!inserted) {
      if (warnings) {
        warnings->push_back(key.loc + ": line skipped: key " + key.fingerprint +
                            " is already listed at " + keys_[it->second].loc);
      }
      continue;
    }
    keys_.push_back(std::move(key));
  }
}

std::string read_key_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    throw std::runtime_error(path + ": read error");
  }
  return ss.str();
}

std::vector<std::string> key_files(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(path)) {
    return {path};
  }
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(path)) {  // throws filesystem_error
    const std::string name = entry.path().filename().string();
    // Dotfiles and `~` backups are editors' (and `snigate keys`') temporaries, not keys.
    if (name.starts_with(".") || name.ends_with("~") || !entry.is_regular_file()) {
      continue;
    }
    files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::shared_ptr<const KeyStore> KeyStore::from_text(std::string_view content,
                                                    std::string_view file_name,
                                                    std::vector<std::string>* warnings) {
  std::shared_ptr<KeyStore> store(new KeyStore());
  store->add(parse_authorized_keys(content, file_name), warnings);
  return store;
}

const AuthorizedKey* KeyStore::find(std::string_view type, std::string_view blob_base64) const {
  const auto it = index_.find(index_key(type, blob_base64));
  return it == index_.end() ? nullptr : &keys_[it->second];
}

std::shared_ptr<const KeyStore> load_key_store(const std::string& path,
                                               std::vector<std::string>* warnings) {
  namespace fs = std::filesystem;
  std::shared_ptr<KeyStore> store(new KeyStore());
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) {
    if (warnings) {
      warnings->push_back(path + ": no such file: no key can log in; add a line " +
                          "`ssh-ed25519 AAAA... name` to " + path);
    }
    return store;
  }
  for (const auto& f : key_files(path)) {
    store->add(parse_authorized_keys(read_key_file(f), f), warnings);
  }
  if (store->size() == 0 && warnings) {
    warnings->push_back(path + ": no usable keys: no key can log in; add a line " +
                        "`ssh-ed25519 AAAA... name` to " + path);
  }
  return store;
}

}  // namespace gw::keys

// `snigate keys add|list|remove`: manage authorized_keys without a text editor. Every line
// written is re-parsed by the same parser the gateway uses, edits are atomic (temporary file
// in the same directory, fsync, rename) and keep comments and unrelated lines byte for byte.
// The running gateway picks changes up by itself (it watches the file).
// Deliberately no locking against a concurrent hand edit: the rename is atomic, the last
// writer wins, as with any editor. `snigate hostkey` lives in main/cli (it needs libssh).
#pragma once

#include <istream>
#include <ostream>
#include <string>
#include <vector>

namespace gw::app {

/// Runs `snigate keys ARGS...` (args after "keys"). Returns the exit status: 0 done (also for
/// `--help`), 1 refused (duplicate key, nothing to remove, ambiguous name, bad key or pattern,
/// unreadable or unwritable file), 2 usage error (one line on `err`). Messages go to `err`,
/// results to `out`; `keys add -` reads the public key from std::cin.
int run_keys_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// As above, reading `keys add -` from `in` (for tests).
int run_keys_command(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
                     std::ostream& err);

}  // namespace gw::app

// `snigate keys add|edit|list|remove`: manage authorized_keys without a text editor. Every line
// written is re-parsed by the same parser the gateway uses, edits are atomic (temporary file
// in the same directory, fsync, rename) and keep comments and unrelated lines byte for byte.
// The running gateway picks changes up by itself (it watches the file).
// Deliberately no locking against a concurrent hand edit: the rename is atomic, the last
// writer wins, as with any editor. `snigate hostkey` lives in main/cli (it needs libssh).
// Where the keys live is a setting like serve's (--state-dir, --authorized-keys or its alias
// --file, --config, SNIGATE_STATE_DIR, SNIGATE_AUTHORIZED_KEYS): the verbs parse their own
// options and hand those to the shared parser (cli.hpp), so there is no second default.
#pragma once

#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include "app/cli.hpp"

namespace gw::app {

/// Runs `snigate keys ARGS...` (args after "keys") with the settings of `env` and the config
/// file `read_file` reads. Returns the exit status: 0 done (also for `--help`), 1 refused
/// (duplicate key, nothing to remove or edit, ambiguous name, bad key or pattern, unreadable
/// or unwritable file), 2 usage error or bad setting (one line on `err`). Messages go to
/// `err`, results to `out`; `keys add -` reads the public key from `in`.
int run_keys_command(const std::vector<std::string>& args, const Environment& env,
                     const FileReader& read_file, std::istream& in, std::ostream& out,
                     std::ostream& err);

/// As above with no environment and config files from disk (for tests).
int run_keys_command(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
                     std::ostream& err);

}  // namespace gw::app

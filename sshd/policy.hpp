// Pure SSH-side decisions: parsing the session command (`tls [options]`) and deciding whether a
// `tcpip-forward` request may bind a name. Deliberately no libssh, no sockets, no clock and no
// registry: whether a name is already taken, CIDR matching of live clients and key expiry are
// decided by the callers that own that state.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keys/authorized_keys.hpp"
#include "keys/key_store.hpp"
#include "tunnel/hostname.hpp"

namespace gw::sshd {

struct TlsCommand {
  std::vector<std::string> allow_cidr;  // normalised "addr/len"; a bare address gets /32 or /128
  std::vector<std::string> deny_cidr;
  bool internal = false;  ///< every endpoint of the session is internal (ssh -L / -W only)
  bool pool = false;
  bool takeover = false;
  bool verbose = false;
  bool help = false;
};

struct CommandResult {
  std::optional<TlsCommand> command;
  std::string error;  // text for stderr (ends with a newline), then exit status 1; empty on success
};

/// Parses the exec command line. Empty (or whitespace) and bare `tls` give a default
/// TlsCommand; a first word starting with `-` is read as options to an implied `tls`. Words
/// split on whitespace; single or double quotes group (no escapes). On refusal `command` is
/// nullopt and `error` holds the exact user-facing text (DESIGN.md section 3), e.g.
/// "snigate: --crt is not supported over SSH: TLS passes through to your upstream".
CommandResult parse_command(std::string_view command_line);

/// The `--help` text (ends with a newline).
std::string tls_help_text();

/// True if `cidr` is `IPv4[/0-32]` or `IPv6[/0-128]` as gw::Cidr::parse accepts it (no zone
/// ids, no leading zeros in the prefix length, v4-mapped prefixes /96 or longer); on success
/// `*normalised` (if not null) is Cidr::str(): explicit prefix, lower case, v4-mapped as IPv4.
bool parse_cidr(std::string_view cidr, std::string* normalised);

struct ForwardRequest {
  std::string bind_address;  // as sent in tcpip-forward: the hostname, or "", "localhost", ...
  std::uint32_t bind_port;
};

struct ForwardPolicy {
  tunnel::Hostname domain;       // --domain: generated names go under it
  std::uint16_t advertise_port;  // --advertise-port
  /// Every key, so a name another key is given with permitlisten is not also available to this
  /// one through the --domain default; null: not checked.
  const keys::KeyStore* keys = nullptr;
  std::string_view key_fingerprint;  // the requesting key's, which may overlap itself
};

struct ForwardDecision {
  bool ok = false;
  std::optional<tunnel::Hostname> hostname;  // nullopt = generate a name under domain
  std::uint16_t reply_port = 0;  // 0 unless the request asked for port 0: then advertise_port
  std::string refusal;           // user-facing, says what to do instead; empty when ok
};

/// Decides a tcpip-forward request for a key (DESIGN.md sections 3 and 5). Refusals: the key has
/// restrict/no-port-forwarding; the port is not 443, advertise_port or 0; the bind address is
/// not a Hostname (the hostname_errc message is used); the key's permitlisten entries don't
/// allow the name and port; a key without permitlisten asks for a name not under `domain`, or
/// one that another key's permitlisten names (for a wildcard: any name it covers), since the
/// --domain default must never hand out what the admin gave someone explicitly.
ForwardDecision decide_forward(const ForwardRequest& request, const keys::KeyOptions& key,
                               const ForwardPolicy& policy);

/// Names under this label are internal endpoints whatever the command says (`app.internal`).
inline constexpr std::string_view kInternalSuffix = "internal";

/// True if `host` (normalised, may be a wildcard) is under `.internal`.
bool is_internal_name(std::string_view host);

/// A direct-tcpip channel open (`ssh -L LOCAL:HOST:PORT`, `ssh -W HOST:PORT`) as the client sent
/// it: where the teammate wants to go.
struct DirectRequest {
  std::string host;
  std::uint32_t port = 0;
};

/// What serves a name, as the registry saw it when the open arrived.
struct DirectTarget {
  bool exists = false;                        ///< a live endpoint serves the name
  bool internal = false;                      ///< its binding
  std::vector<std::string> key_fingerprints;  ///< the keys holding it
};

struct DirectDecision {
  /// The SSH open-failure code the refusal maps to (RFC 4254 5.1): rights are
  /// administratively_prohibited, a target that isn't there is connect_failed.
  enum class Code { none, administratively_prohibited, connect_failed };
  bool ok = false;
  Code code = Code::none;
  std::optional<tunnel::Hostname> name;  ///< set when ok: the normalised name to route
  /// Stable word for logs and metrics: restricted, bad_port, bad_name, not_permitted,
  /// no_endpoint, public_only, other_key (and, decided before this, limit and request_budget:
  /// direct_channel.cpp).
  const char* reason = "";
  std::string refusal;  ///< user-facing, says what to do instead; empty when ok
};

/// Decides a direct-tcpip open by a key (README "Internal endpoints"). In order: the key's
/// restrict/no-port-forwarding (permitopen does not undo them, as in OpenSSH; port-forwarding
/// after restrict does); the port is 443 or `advertise_port`; the host is a Hostname (no
/// wildcard); with permitopen entries, one must match (host patterns as for permitlisten, port
/// 443/advertise_port/`*`), checked before anything is looked up so a key learns nothing about
/// names it may not reach; then `lookup(name)` must find a live internal endpoint, which a key
/// without permitopen may reach only if every holder is that same key.
DirectDecision decide_direct_open(
    const DirectRequest& request, const keys::KeyOptions& key, std::string_view key_fingerprint,
    std::uint16_t advertise_port,
    const std::function<DirectTarget(const tunnel::Hostname&)>& lookup);

/// A 6-8 character lowercase label from caller-supplied randomness: starts with a letter, then
/// letters and digits without the look-alikes l, o, 0, 1. Never all digits, never a hyphen.
std::string generate_label(std::uint64_t random);

}  // namespace gw::sshd

// The relay's mutual TLS between cluster nodes: the contexts every relay connection is made
// from, loaded once at start from RelayConfig (--cluster-ca, --cluster-cert, --cluster-key),
// and the session caches that make a node's later relay connections to a peer resumptions (no
// certificate signatures): the dialer keeps the latest ticket per peer, the owner the sessions
// its tickets name (stateful tickets: cheaper to resume than the self-contained kind). TLS 1.3
// only. A node is named by its certificate's subjectAltName DNS entry, which must be exactly its
// node id (node ids are DNS labels): the dialer checks that the peer's certificate names the
// node id the registry gave for that address, the listener logs the id the client's names. CN
// is never consulted.
// Deliberately not here: sockets (cluster/tls_stream.*), revocation (rotate the CA).
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/unique_handle.hpp"

namespace gw::cluster {

using SslCtxPtr = std::unique_ptr<SSL_CTX, CFree<&SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, CFree<&SSL_free>>;
using SslSessionPtr = std::unique_ptr<SSL_SESSION, CFree<&SSL_SESSION_free>>;

/// What the relay needs from the app's cluster options; the numbers are CLUSTER.md's.
struct RelayConfig {
  std::string node_id;    ///< this node (--node-id): its certificate must name it
  std::string ca_file;    ///< --cluster-ca: PEM, the CA every node's certificate is signed by
  std::string cert_file;  ///< --cluster-cert: PEM chain, subjectAltName DNS:<node-id>
  std::string key_file;   ///< --cluster-key
  std::chrono::milliseconds connect_timeout{1000};  ///< dialer: TCP connect to a peer
  /// Dialer: the TLS handshake; the owner's status after the header gets as long again.
  std::chrono::milliseconds handshake_timeout{2000};
  /// Listener: accept to the end of the TLS handshake, and to the PROXY header when the peer
  /// proved nothing yet.
  std::chrono::milliseconds accept_timeout{3000};
  /// Dialer: a warm spare waits this long for a visitor, then is closed (and replaced while
  /// its peer is in use). The listener waits spare_idle + accept_timeout for the header of a
  /// connection whose client certificate it verified, so the dialer always lets go first and
  /// an unauthenticated connection still has accept_timeout only.
  std::chrono::milliseconds spare_idle{20000};
  std::chrono::milliseconds quarantine{5000};  ///< dialer: an unreachable peer is skipped this long
  std::int64_t max_pending = 4096;  ///< listener: relay connections not yet past their header
  /// Relay protocol 2 (ALPN "snigate/2"): the visitor's bytes framed (cluster/framed_stream.hpp),
  /// so a connection whose visitor ended cleanly carries the next one. Offered by the dialer,
  /// chosen by the listener; a node of an earlier version offers and chooses nothing, and both
  /// sides then speak protocol 1 (raw bytes, a connection per visitor). false: protocol 1 only
  /// (tests of a mixed cluster).
  bool framing = true;
};

/// The two contexts, and the client session cache. Thread-safe after load().
/// One peer as the relay keys what it keeps per peer (TLS sessions, warm spares):
/// "node@HOST:PORT", so a node that moves to another address starts afresh.
inline std::string peer_key(std::string_view node_id, std::string_view relay) {
  return std::string(node_id) + "@" + std::string(relay);
}

class RelayTls {
 public:
  /// Loads and checks the files; throws std::runtime_error naming the option and the problem
  /// (start-up: one line, exit 2), e.g. "--cluster-cert node1.pem: the certificate names
  /// node-2, not --node-id node-1 (put subjectAltName=DNS:node-1 in it)".
  static std::shared_ptr<RelayTls> load(const RelayConfig& config);

  SSL_CTX* server() const { return server_.get(); }
  /// A client SSL for a connection to `node_id` at `relay` (HOST:PORT): checks the peer names
  /// `node_id`, resumes the last session with that peer when there is one (the new-session
  /// callback files the peer's tickets under "node@relay", a key this object keeps).
  SslPtr client_for(const std::string& node_id, const std::string& relay) const;
  const std::string& node_id() const { return node_id_; }

  /// The node id a verified peer certificate names (its first subjectAltName DNS entry).
  static std::optional<std::string> peer_node_id(SSL* ssl);
  /// After the handshake: both sides speak relay protocol 2 (ALPN "snigate/2" was chosen).
  static bool framed(SSL* ssl);

 private:
  static int on_new_session(SSL* ssl, SSL_SESSION* session);

  std::string node_id_;
  SslCtxPtr server_;
  SslCtxPtr client_;
  mutable std::mutex mutex_;
  /// The latest ticket per peer ("node@host:port"), null before the first; one entry per peer,
  /// bounded by the cluster, never erased: an SSL borrows its entry's key (app data).
  mutable std::map<std::string, SslSessionPtr, std::less<>> sessions_;
};

}  // namespace gw::cluster

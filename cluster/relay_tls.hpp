// The relay's mutual TLS between cluster nodes: the contexts every relay connection is made
// from, loaded once at start from RelayConfig (--cluster-ca, --cluster-cert, --cluster-key),
// and the client-side session cache that makes a node's second relay connection to a peer a
// resumption (no certificate signatures). TLS 1.3 only. A node is named by its certificate's
// subjectAltName DNS entry, which must be exactly its node id (node ids are DNS labels):
// the dialer checks that the peer's certificate names the node id the registry gave for that
// address, the listener logs the id the client's names. CN is never consulted.
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
  std::chrono::milliseconds connect_timeout{1000};    ///< dialer: TCP connect to a peer
  std::chrono::milliseconds handshake_timeout{2000};  ///< dialer: TLS handshake, then the status
  /// Listener: accept to the PROXY header read (handshake included).
  std::chrono::milliseconds accept_timeout{3000};
  std::chrono::milliseconds quarantine{5000};  ///< dialer: an unreachable peer is skipped this long
  std::int64_t max_pending = 4096;  ///< listener: relay connections not yet past their header
};

/// The two contexts, and the client session cache. Thread-safe after load().
class RelayTls {
 public:
  /// Loads and checks the files; throws std::runtime_error naming the option and the problem
  /// (start-up: one line, exit 2), e.g. "--cluster-cert node1.pem: the certificate names
  /// node-2, not --node-id node-1 (put subjectAltName=DNS:node-1 in it)".
  static std::shared_ptr<RelayTls> load(const RelayConfig& config);

  SSL_CTX* server() const { return server_.get(); }
  /// A client SSL for a connection to `node_id` at `relay` (HOST:PORT): checks the peer names
  /// `node_id`, resumes the last session with that peer when there is one. `key` must outlive
  /// the SSL (the connection keeps it): the new-session callback files tickets under it.
  SslPtr client_for(const std::string& node_id, const std::string* key) const;
  const std::string& node_id() const { return node_id_; }

  /// The node id a verified peer certificate names (its first subjectAltName DNS entry).
  static std::optional<std::string> peer_node_id(SSL* ssl);

 private:
  static int on_new_session(SSL* ssl, SSL_SESSION* session);

  std::string node_id_;
  SslCtxPtr server_;
  SslCtxPtr client_;
  mutable std::mutex mutex_;
  /// The latest ticket per peer ("node@host:port"); one entry per peer, bounded by the cluster.
  mutable std::map<std::string, SslSessionPtr, std::less<>> sessions_;
};

}  // namespace gw::cluster

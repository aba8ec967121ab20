#include "cluster/relay_tls.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <stdexcept>

namespace gw::cluster {
namespace {

/// The OpenSSL error queue as one line (and empties it).
std::string openssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

constexpr unsigned char kSessionIdContext[] = "snigate-relay";
/// Relay protocol 2 as an ALPN list (length-prefixed): framed visitors, reusable connections.
constexpr unsigned char kAlpnFramed[] = "\x09snigate/2";
constexpr unsigned kAlpnFramedSize = sizeof kAlpnFramed - 1;

/// The listener's ALPN choice: protocol 2 when the dialer offers it, else none (protocol 1).
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned inlen, void*) {
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outlen, kAlpnFramed, kAlpnFramedSize, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = chosen;  // points into `in` (or kAlpnFramed): both outlive the callback
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}
/// The owner's session cache (stateful tickets, see load()).
constexpr long kServerSessions = 256;

void common_setup(SSL_CTX* ctx, const RelayConfig& c) {
  // Only TLS 1.3: one round trip, and resumption without a second signature.
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  // AES-128-GCM first: the relay is bulk between our own nodes, and with AES-NI it is the
  // fastest suite (`openssl speed -evp` here: 3.35 GB/s against AES-256-GCM's 2.87).
  SSL_CTX_set_ciphersuites(ctx,
                           "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
                           "TLS_AES_256_GCM_SHA384");
  // Partial and moving writes: the Bridge writes what the socket takes and retries from its own
  // buffer. Released buffers: an idle relayed connection holds no 34 KiB of TLS buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  // A peer closing TCP without close_notify is EOF, not an error: what the relay carries is the
  // visitor's own TLS, which detects truncation end to end.
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_read_ahead(ctx, 1);
  if (SSL_CTX_load_verify_locations(ctx, c.ca_file.c_str(), nullptr) != 1) {
    fail("--cluster-ca " + c.ca_file + ": " + openssl_errors());
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, c.cert_file.c_str()) != 1) {
    fail("--cluster-cert " + c.cert_file + ": " + openssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, c.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    fail("--cluster-key " + c.key_file + ": " + openssl_errors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    fail("--cluster-key " + c.key_file + ": does not match --cluster-cert " + c.cert_file);
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
}

std::optional<std::string> first_dns_name(X509* cert) {
  if (cert == nullptr) {
    return std::nullopt;
  }
  // X509_get_ext_d2i allocates the list: freed here, the names copied out first.
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  std::optional<std::string> out;
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names) && !out; ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_DNS) {
      const auto* s = n->d.dNSName;
      out = std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                        static_cast<std::size_t>(ASN1_STRING_length(s)));
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

}  // namespace

std::shared_ptr<RelayTls> RelayTls::load(const RelayConfig& config) {
  auto tls = std::make_shared<RelayTls>();
  tls->node_id_ = config.node_id;
  tls->server_.reset(SSL_CTX_new(TLS_server_method()));
  tls->client_.reset(SSL_CTX_new(TLS_client_method()));
  if (!tls->server_ || !tls->client_) {
    fail("relay TLS: " + openssl_errors());
  }
  common_setup(tls->server_.get(), config);
  common_setup(tls->client_.get(), config);
  // Our own certificate must name us, or every peer's dialer refuses us: say so at start.
  X509* own = SSL_CTX_get0_certificate(tls->server_.get());
  if (X509_check_host(own, config.node_id.data(), config.node_id.size(),
                      X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_WILDCARDS,
                      nullptr) != 1) {
    const auto named = first_dns_name(own);
    fail("--cluster-cert " + config.cert_file + ": the certificate names " +
         (named ? *named : std::string("no DNS name")) + ", not --node-id " + config.node_id +
         " (issue it with subjectAltName=DNS:" + config.node_id + ")");
  }
  // Resumed sessions keep the client certificate; the id context makes OpenSSL allow that.
  SSL_CTX_set_session_id_context(tls->server_.get(), kSessionIdContext,
                                 sizeof kSessionIdContext - 1);
  SSL_CTX_set_num_tickets(tls->server_.get(), 1);
  // Stateful TLS 1.3 tickets: a ticket is an id into this process's cache, so resuming costs
  // no ticket decryption and no decoding of the session (with the client's certificate in it),
  // and issuing the next one no encoding and encryption: the owner's CPU per relayed visitor.
  // Every handshake adds a session (its new ticket); a dialer only uses its latest per peer, so
  // kServerSessions recent ones are plenty, and bound the memory (~1-2 KiB each).
  SSL_CTX_set_options(tls->server_.get(), SSL_OP_NO_TICKET);
  SSL_CTX_sess_set_cache_size(tls->server_.get(), kServerSessions);
  SSL_CTX_set_session_cache_mode(tls->client_.get(),
                                 SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(tls->client_.get(), &RelayTls::on_new_session);
  SSL_CTX_set_app_data(tls->client_.get(), tls.get());  // borrowed: tls owns the context
  if (config.framing) {
    SSL_CTX_set_alpn_select_cb(tls->server_.get(), &select_alpn, nullptr);
    if (SSL_CTX_set_alpn_protos(tls->client_.get(), kAlpnFramed, kAlpnFramedSize) != 0) {
      fail("relay TLS: " + openssl_errors());
    }
  }
  return tls;
}

SslPtr RelayTls::client_for(const std::string& node_id, const std::string& relay) const {
  SslPtr ssl(SSL_new(client_.get()));
  if (!ssl) {
    return ssl;
  }
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());  // borrowed from ssl
  X509_VERIFY_PARAM_set_hostflags(
      param, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_WILDCARDS);
  X509_VERIFY_PARAM_set1_host(param, node_id.data(), node_id.size());  // copies the name
  std::lock_guard lock(mutex_);
  const auto [it, added] = sessions_.try_emplace(peer_key(node_id, relay));
  // Borrowed: a map key's address is stable and the entry is never erased.
  SSL_set_app_data(ssl.get(), const_cast<std::string*>(&it->first));
  if (it->second) {
    SSL_set_session(ssl.get(), it->second.get());  // set1: ssl takes its own reference
  }
  return ssl;
}

int RelayTls::on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* self = static_cast<RelayTls*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  const auto* key = static_cast<const std::string*>(SSL_get_app_data(ssl));
  if (self == nullptr || key == nullptr) {
    return 0;
  }
  std::lock_guard lock(self->mutex_);
  // The key's entry exists (client_for made it); returning 1: the reference is ours now.
  self->sessions_.find(*key)->second = SslSessionPtr(session);
  return 1;
}

bool RelayTls::framed(SSL* ssl) {
  const unsigned char* proto = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl, &proto, &len);  // borrowed from ssl
  return len == kAlpnFramedSize - 1 && std::memcmp(proto, kAlpnFramed + 1, len) == 0;
}

std::optional<std::string> RelayTls::peer_node_id(SSL* ssl) {
  // SSL_get0_peer_certificate: borrowed from ssl, valid while it lives.
  return first_dns_name(SSL_get0_peer_certificate(ssl));
}

}  // namespace gw::cluster

#include "sshd/forwards.hpp"

#include <algorithm>
#include <random>

#include "common/printable.hpp"

namespace gw::sshd {
namespace {

/// Forwards one session may hold.
constexpr std::size_t kMaxForwardsPerSession = 64;

std::uint64_t random_u64() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

}  // namespace

ForwardDecision ForwardTable::decide(const std::string& address, std::uint32_t port,
                                     const keys::AuthorizedKey& key,
                                     const keys::KeyStore* store) const {
  return decide_forward(ForwardRequest{address, port}, key.options,
                        ForwardPolicy{ctx_->domain, ctx_->advertise_port, store, key.fingerprint});
}

std::string ForwardTable::no_longer_allowed(const Forward& f, const keys::AuthorizedKey& key,
                                            const keys::KeyStore& store) const {
  return decide(f.bind_address, f.requested_port, key, &store).refusal;
}

ForwardTable::Prepared ForwardTable::prepare(const std::string& address, std::uint32_t port,
                                             const keys::AuthorizedKey& key) {
  Prepared p;
  if (forwards_.size() >= kMaxForwardsPerSession) {
    p.refusal = "too many forwards in one session";
    return p;
  }
  const ForwardDecision decision = decide(address, port, key, ctx_->keys->get().get());
  if (!decision.ok) {
    p.refusal = decision.refusal;
    return p;
  }
  // Per-key limits count the whole cluster: the key's endpoints on other nodes too.
  const std::size_t elsewhere =
      ctx_->claim_gate ? ctx_->claim_gate->remote_usage(key.fingerprint).endpoints : 0;
  if (ctx_->sessions->endpoints_of_key(key.fingerprint) + elsewhere >=
      ctx_->max_endpoints_per_key) {
    p.refusal = "this key already holds " + std::to_string(ctx_->max_endpoints_per_key) +
                " endpoints (the limit): cancel one first";
    return p;
  }
  std::string name;
  if (decision.hostname) {
    name = decision.hostname->str();
    // A plain conflict is refused now, so ExitOnForwardFailure clients see it. Pooled or
    // same-key holders may still be joined, taken over or waited for once the command's
    // options arrive.
    // In cluster mode, other nodes' names count as this node's own (the gate's watch cache).
    const tunnel::ClaimGate* gate = ctx_->claim_gate.get();
    if (ctx_->registry->probe(name, key.fingerprint) == tunnel::NameState::held ||
        (gate != nullptr && (gate->probe(name, key.fingerprint) == tunnel::NameState::held ||
                             !gate->nesting(name, key.fingerprint).empty()))) {
      // held: another key's session has the name, or one its names would nest with.
      p.refusal = ctx_->registry->nesting(name, key.fingerprint);
      if (p.refusal.empty() && gate != nullptr) {
        p.refusal = gate->nesting(name, key.fingerprint);
      }
      if (p.refusal.empty()) {
        p.refusal = name +
                    " is held by another key's session: pick another name (--takeover "
                    "only moves names between sessions of the same key)";
      }
      return p;
    }
  } else {
    for (int attempt = 0; attempt < 16 && name.empty(); ++attempt) {
      name = generate_label(random_u64()) + "." + ctx_->domain.str();
      if (ctx_->registry->probe(name, "") != tunnel::NameState::free ||
          (ctx_->claim_gate && ctx_->claim_gate->probe(name, "") != tunnel::NameState::free)) {
        name.clear();
      }
    }
    if (name.empty()) {
      p.refusal = "could not generate a free hostname, try again";
      return p;
    }
  }
  p.key = next_key_++;
  Forward& f = p.forward.emplace();
  f.bind_address = address;
  f.bind_port = port == 0 ? decision.reply_port : port;
  f.requested_port = port;
  f.hostname = std::move(name);
  return p;
}

void ForwardTable::add(std::size_t key, Forward f) {
  forwards_.emplace(key, std::move(f));
  ctx_->sessions->set_endpoints(session_id_, forwards_.size());
}

Forward* ForwardTable::find(std::size_t key) {
  const auto it = forwards_.find(key);
  return it == forwards_.end() ? nullptr : &it->second;
}

ForwardTable::Map::iterator ForwardTable::find_bind(std::string_view address, std::uint32_t port) {
  return std::find_if(forwards_.begin(), forwards_.end(), [&](const auto& kv) {
    return kv.second.bind_address == address && kv.second.bind_port == port;
  });
}

ForwardTable::Map::iterator ForwardTable::remove(Map::iterator it, std::string_view reason) {
  const Forward& f = it->second;
  if (f.registration) {
    ctx_->log->info("endpoint.deleted conn=s{} url={} id={} reason=\"{}\"", session_id_, url_for(f),
                    f.id, reason);
    ctx_->events->emit(tunnel::EndpointDeleted{f.id, url_for(f), session_id_, std::string(reason),
                                               std::chrono::system_clock::now()});
  }
  auto next = forwards_.erase(it);
  ctx_->sessions->set_endpoints(session_id_, forwards_.size());
  return next;
}

bool ForwardTable::remove(std::size_t key, std::string_view reason) {
  const auto it = forwards_.find(key);
  if (it == forwards_.end()) {
    return false;
  }
  remove(it, reason);
  return true;
}

void ForwardTable::remove_all(std::string_view reason) {
  for (auto it = forwards_.begin(); it != forwards_.end();) {
    it = remove(it, reason);
  }
}

std::string ForwardTable::claim(std::size_t key, Forward& f, const ClaimOptions& options) {
  tunnel::ClaimRequest request;
  request.name = f.hostname;
  request.endpoint = f.endpoint;
  request.key_fingerprint = options.key_fingerprint;
  request.pool = options.pool;
  request.takeover = options.takeover;
  request.pool_group = options.pool_group;
  request.internal = options.internal || is_internal_name(f.hostname);
  tunnel::ClaimResult result = ctx_->registry->claim(std::move(request));
  if (!result.registration) {
    return result.refusal;
  }
  f.registration = std::move(*result.registration);
  f.waiting = false;
  for (const auto& old : result.displaced) {
    old->displaced(f.hostname);  // posts to the old session; never runs it here
  }
  f.id = "ep_" + std::to_string(ctx_->stats->next_endpoint_id++);
  f.created_at = std::chrono::system_clock::now();
  f.pool = options.pool;
  f.internal = request.internal;
  ctx_->log->info(
      "endpoint.created conn=s{} url={} id={} fp={} key=\"{}\" pool={} binding={} forward={}",
      session_id_, url_for(f), f.id, options.key_fingerprint, printable(options.key_name), f.pool,
      tunnel::binding_name(f.internal), key);
  ctx_->events->emit(tunnel::EndpointCreated{f.id, url_for(f), session_id_, options.key_fingerprint,
                                             options.key_name, f.pool, f.created_at, f.internal});
  return {};
}

std::string ForwardTable::url_for(const Forward& f) const {
  std::string url = "tls://" + f.hostname;
  // An internal endpoint is opened as NAME:443 through the SSH port, whatever the TLS port.
  if (ctx_->advertise_port != 443 && !f.internal) {
    url += ":" + std::to_string(ctx_->advertise_port);
  }
  return url;
}

std::string ForwardTable::banner_for(const Forward& f) const {
  return "snigate: Forwarding " + url_for(f) + " -> your -R " + f.bind_address + ":" +
         std::to_string(f.bind_port) + " target (TLS passes through untouched)" +
         (f.internal ? "\nsnigate: " + f.hostname +
                           " is internal: not on the public port; teammates reach it with ssh -L "
                           "PORT:" +
                           f.hostname + ":443 (or -W " + f.hostname +
                           ":443) to this "
                           "gateway"
                     : std::string());
}

std::vector<EndpointInfo> ForwardTable::infos() const {
  std::vector<EndpointInfo> out;
  for (const auto& [key, f] : forwards_) {
    if (f.registration) {
      out.push_back(EndpointInfo{f.id, url_for(f), f.pool, f.created_at, f.open_connections,
                                 f.bytes_in, f.bytes_out, f.internal});
    }
  }
  return out;
}

bool ForwardTable::any_claimed() const {
  return std::any_of(forwards_.begin(), forwards_.end(),
                     [](const auto& kv) { return static_cast<bool>(kv.second.registration); });
}

bool ForwardTable::any_waiting() const {
  return std::any_of(forwards_.begin(), forwards_.end(),
                     [](const auto& kv) { return kv.second.waiting; });
}

}  // namespace gw::sshd

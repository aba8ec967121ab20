#include "cluster/registry.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>

#include "common/printable.hpp"
#include "tunnel/claim_decision.hpp"

namespace gw::cluster {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kRetryDelay = std::chrono::milliseconds(500);
constexpr const char* kUnavailable = "registry unavailable, retry";

std::string random_hex(int bytes) {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < bytes; ++i) {
    static constexpr char kHex[] = "0123456789abcdef";
    const unsigned v = rd() & 0xff;
    out += kHex[v >> 4];
    out += kHex[v & 15];
  }
  return out;
}

asio::awaitable<void> sleep_for(asio::steady_timer& t, Clock::duration d) {
  t.expires_after(d);
  boost::system::error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool lease_not_found(const std::string& error) {
  return error.find("lease not found") != std::string::npos;
}

}  // namespace

class Registry::Ticket final : public tunnel::GateTicket {
 public:
  Ticket(std::weak_ptr<Registry> registry, std::uint64_t id)
      : registry_(std::move(registry)), id_(id) {}
  ~Ticket() override {
    if (auto r = registry_.lock()) {
      asio::post(r->ioc_, [r, id = id_] { r->cancel(id); });
    }
  }

 private:
  std::weak_ptr<Registry> registry_;
  std::uint64_t id_;
};

Registry::Registry(asio::io_context& ioc, RegistryConfig config,
                   std::shared_ptr<spdlog::logger> log)
    : ioc_(ioc),
      config_(std::move(config)),
      log_(std::move(log)),
      client_(ioc.get_executor(), config_.endpoints, config_.request_timeout),
      cache_(config_.node_id),
      // Counted lost at 80 % of the TTL without an answer (8 s of 10 s): by then etcd may
      // be about to drop the keys, and claims would only time out.
      lease_(config_.lease_ttl * 8 / 10),
      boot_(random_hex(4)),
      lease_timer_(ioc),
      watch_timer_(ioc) {}

Registry::~Registry() = default;

void Registry::start() {
  auto self = shared_from_this();
  asio::co_spawn(
      ioc_, [self]() -> asio::awaitable<void> { co_await self->lease_loop(); }, asio::detached);
  asio::co_spawn(
      ioc_, [self]() -> asio::awaitable<void> { co_await self->watch_loop(); }, asio::detached);
}

std::string Registry::start_problem() const {
  std::lock_guard lock(problem_mutex_);
  return problem_;
}

void Registry::stop() {
  stopping_ = true;
  lease_timer_.cancel();
  watch_timer_.cancel();
  client_.cancel_watch();
}

void Registry::shutdown(std::function<void()> done) {
  auto self = shared_from_this();
  asio::post(ioc_, [self, done = std::move(done)]() mutable {
    self->stop();
    asio::co_spawn(
        self->ioc_,
        [self, done = std::move(done)]() -> asio::awaitable<void> {
          if (const std::int64_t id = self->lease_.id(); id != 0) {
            auto r = co_await self->call(RegistryStats::revoke, "/v3/lease/revoke",
                                         "{\"ID\":\"" + std::to_string(id) + "\"}");
            self->log_->info("cluster.lease_revoked node={} lease={:x} ok={}",
                             self->config_.node_id, id, static_cast<bool>(r));
          }
          done();
        },
        asio::detached);
  });
}

ClusterView Registry::view() const {
  ClusterView v;
  v.node_id = config_.node_id;
  {
    std::lock_guard lock(problem_mutex_);
    v.etcd = current_etcd_;
  }
  v.lease_state = to_string(static_cast<LeaseState>(stats_.lease_state.load()));
  v.lease_id = lease_id_.load();
  v.revision = cache_.revision();
  v.routes = cache_.routes();
  v.nodes = cache_.nodes();
  return v;
}

void Registry::set_lease_state_stat() {
  stats_.lease_state = static_cast<int>(lease_.state());
  lease_id_ = lease_.id();
}

asio::awaitable<gw::Expected<std::string>> Registry::call(RegistryStats::Op op, std::string path,
                                                          std::string body) {
  const auto t0 = Clock::now();
  auto r = co_await client_.post(std::move(path), std::move(body));
  stats_.latency.observe(std::chrono::duration<double>(Clock::now() - t0).count());
  if (r) {
    stats_.ok[op]++;
  } else {
    stats_.failed[op]++;
  }
  {
    std::lock_guard lock(problem_mutex_);
    current_etcd_ = client_.current();
    if (!r) {
      problem_ = client_.current() + ": " + r.error().message();
    }
  }
  co_return r;
}

// ---- the lease -------------------------------------------------------------------------

asio::awaitable<bool> Registry::grant_and_register() {
  const auto ttl_s = std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(config_.lease_ttl).count());
  auto r = co_await call(RegistryStats::grant, "/v3/lease/grant",
                         "{\"TTL\":\"" + std::to_string(ttl_s) + "\"}");
  if (!r) {
    co_return false;
  }
  const LeaseResult grant = parse_lease_response(*r);
  if (!grant.error.empty() || grant.id == 0 || grant.ttl == 0) {
    log_->warn("cluster.lease_grant_failed error=\"{}\"", printable(grant.error, 200));
    co_return false;
  }
  NodeValue node{config_.relay_advertise, boot_, config_.version};
  const std::string key = node_key(config_.node_id);
  // Named vectors, not braced lists: g++ 12 miscompiles initializer lists in coroutines.
  std::vector<std::string> compares(1, compare_create(key, "", 0));
  std::vector<std::string> ops(1, put_op(key, encode_node_value(node), grant.id));
  auto t = co_await call(RegistryStats::grant, "/v3/kv/txn", txn_request(compares, ops));
  if (!t) {
    co_return false;
  }
  const TxnResult txn = parse_txn_response(*t);
  if (!txn.error.empty() || !txn.succeeded) {
    const std::string why =
        txn.error.empty() ? "another node is registered with this id (a node that died frees it "
                            "within the lease TTL): give each node its own --node-id, or wait"
                          : txn.error;
    {
      std::lock_guard lock(problem_mutex_);
      problem_ = "--node-id " + config_.node_id + ": " + why;
    }
    log_->error("cluster.register_failed node={} reason=\"{}\"", config_.node_id,
                printable(why, 200));
    co_return false;
  }
  lease_.granted(grant.id, Clock::now());
  set_lease_state_stat();
  log_->info("cluster.lease_granted node={} lease={:x} ttl_s={} etcd={}", config_.node_id, grant.id,
             grant.ttl, client_.current());
  co_return true;
}

asio::awaitable<void> Registry::lease_loop() {
  const auto keepalive_every =
      std::max<Clock::duration>(config_.lease_ttl * 3 / 10, std::chrono::milliseconds(200));
  bool granted_once = false;
  while (!stopping_) {
    if (lease_.needs_grant()) {
      if (co_await grant_and_register()) {
        if (granted_once) {
          // The lease was lost: every key it held is gone. Claim each local route again; a
          // name another session took meanwhile closes that forward.
          std::vector<std::uint64_t> ids;
          for (const auto& [id, c] : claims_) {
            if (c.state == ClaimState::won) {
              ids.push_back(id);
            }
          }
          log_->warn("cluster.reclaim node={} routes={}", config_.node_id, ids.size());
          for (const auto id : ids) {
            co_await run_claim(id, true);
          }
        }
        granted_once = true;
        ready_ = !need_resync_ || ready_.load();
        continue;
      }
      co_await sleep_for(lease_timer_, kRetryDelay);
      continue;
    }
    const LeaseState before = lease_.state();
    auto r = co_await call(RegistryStats::keepalive, "/v3/lease/keepalive",
                           "{\"ID\":\"" + std::to_string(lease_.id()) + "\"}");
    LeaseResult k;
    if (r) {
      k = parse_lease_response(*r);
    } else {
      k.error = r.error().message();
    }
    if (r && k.error.empty() && k.ttl > 0) {
      lease_.keepalive_ok(Clock::now());
      if (before != LeaseState::live) {
        log_->info("cluster.lease_live node={} lease={:x}", config_.node_id, lease_.id());
      }
      if (!pending_releases_.empty()) {
        co_await retry_releases();
      }
    } else if (r && k.error.empty()) {
      log_->warn("cluster.lease_expired node={} lease={:x} (etcd no longer knows it)",
                 config_.node_id, lease_.id());
      lease_.keepalive_unknown();
    } else {
      lease_.keepalive_failed(Clock::now());
      if (before == LeaseState::live) {
        log_->warn("cluster.lease_suspect node={} error=\"{}\" (routing goes on from the cache)",
                   config_.node_id, printable(k.error, 200));
        // A watch to an etcd that stopped answering may never see an error: reconnect it.
        client_.cancel_watch();
      }
      if (lease_.state() == LeaseState::lost && before != LeaseState::lost) {
        log_->warn(
            "cluster.lease_lost node={} (no keepalive answered for {} ms; new claims "
            "are refused until etcd answers)",
            config_.node_id, (config_.lease_ttl * 8 / 10).count());
      }
    }
    set_lease_state_stat();
    if (!lease_.needs_grant()) {
      co_await sleep_for(lease_timer_, keepalive_every);
    }
  }
}

// ---- the watch -------------------------------------------------------------------------

asio::awaitable<bool> Registry::resync() {
  const std::string prefix(kKeyPrefix);
  auto r = co_await call(RegistryStats::range, "/v3/kv/range",
                         range_request(prefix, prefix_end(prefix)));
  if (!r) {
    co_return false;
  }
  const RangeResult range = parse_range_response(*r);
  if (!range.error.empty()) {
    log_->warn("cluster.range_failed error=\"{}\"", printable(range.error, 200));
    co_return false;
  }
  std::vector<std::string> warnings;
  const std::size_t skipped = cache_.reset(range.kvs, range.revision, &warnings) + range.skipped;
  stats_.values_skipped += skipped;
  for (const auto& w : warnings) {
    log_->warn("cluster.value_skipped {}", w);
  }
  watch_from_ = range.revision + 1;
  need_resync_ = false;
  log_->info("cluster.synced revision={} routes={} nodes={} skipped={}", range.revision,
             cache_.routes(), cache_.nodes().size(), skipped);
  // Routes of ours that vanished while the watch was down.
  std::vector<std::uint64_t> gone;
  for (const auto& [id, c] : claims_) {
    if (c.state == ClaimState::won &&
        std::none_of(range.kvs.begin(), range.kvs.end(),
                     [&](const KeyValue& kv) { return kv.key == c.etcd_key; })) {
      gone.push_back(id);
    }
  }
  for (const auto id : gone) {
    route_gone(id);
  }
  co_return true;
}

asio::awaitable<void> Registry::watch_loop() {
  const std::string prefix(kKeyPrefix);
  while (!stopping_) {
    if (need_resync_ && !co_await resync()) {
      co_await sleep_for(watch_timer_, kRetryDelay);
      continue;
    }
    if (lease_.claims_allowed()) {
      ready_ = true;
    }
    const auto ec =
        co_await client_.watch(watch_request(prefix, prefix_end(prefix), watch_from_),
                               [this](std::string_view text) { on_watch_message(text); });
    if (ec) {
      stats_.failed[RegistryStats::watch]++;
    } else {
      stats_.ok[RegistryStats::watch]++;
    }
    if (!stopping_) {
      log_->debug("cluster.watch_ended error=\"{}\" from={}", ec.message(), watch_from_);
      co_await sleep_for(watch_timer_, kRetryDelay);
    }
  }
}

void Registry::on_watch_message(std::string_view text) {
  const WatchParse p = parse_watch_message(text);
  stats_.values_skipped += p.skipped;
  if (!p.message) {
    stats_.values_skipped++;
    log_->warn("cluster.watch_message_skipped error=\"{}\"", printable(p.error, 200));
    return;
  }
  const WatchMessage& m = *p.message;
  log_->debug("cluster.watch revision={} events={} created={}", m.revision, m.events.size(),
              m.created);
  if (m.created && m.revision + 1 < watch_from_) {
    // etcd is behind what we saw: a new or restored data dir. Our copy may hold keys it never
    // had; read everything again.
    log_->warn("cluster.watch_behind revision={} expected_from={} (reading everything again)",
               m.revision, watch_from_);
    need_resync_ = true;
    client_.cancel_watch();
    return;
  }
  if (m.compact_revision > 0 || m.canceled) {
    log_->warn(
        "cluster.watch_canceled compact_revision={} reason=\"{}\" (reading everything "
        "again)",
        m.compact_revision, printable(m.error, 200));
    need_resync_ = true;
    client_.cancel_watch();
    return;
  }
  std::vector<CacheChange> changes;
  std::vector<std::string> warnings;
  stats_.values_skipped += cache_.apply(m, &changes, &warnings);
  for (const auto& w : warnings) {
    log_->warn("cluster.value_skipped {}", w);
  }
  for (const WatchEvent& ev : m.events) {
    watch_from_ = std::max(watch_from_, ev.kv.mod_revision + 1);
  }
  handle_changes(changes);
}

void Registry::handle_changes(const std::vector<CacheChange>& changes) {
  for (const CacheChange& ch : changes) {
    if (!ch.deleted || !ch.route || ch.route->node != config_.node_id) {
      continue;
    }
    // A linear scan: this node's own routes, and only for deletes of its own keys.
    for (const auto& [id, c] : claims_) {
      if (c.state == ClaimState::won && c.etcd_key == ch.etcd_key) {
        route_gone(id);
        break;
      }
    }
  }
}

void Registry::route_gone(std::uint64_t id) {
  const auto it = claims_.find(id);
  if (it == claims_.end()) {
    return;
  }
  const Claim& c = it->second;
  for (const Holder& h : cache_.holders(c.request.name)) {
    if (h.etcd_key == c.etcd_key) {
      continue;
    }
    if (h.value.fpr == c.request.key_fingerprint) {
      lose(id,
           "was taken over by a newer session of your key on node " + h.key.node + " (--takeover)");
    } else {
      lose(id, "is now held by another session (on node " + h.key.node + ")");
    }
    return;
  }
  if (!lease_.claims_allowed()) {
    return;  // the lease is being renewed: the re-grant re-claims every route
  }
  // Nobody else has it (an expired lease, or an operator's delete): take it back.
  auto self = shared_from_this();
  asio::co_spawn(
      ioc_, [self, id]() -> asio::awaitable<void> { co_await self->run_claim(id, true); },
      asio::detached);
}

void Registry::lose(std::uint64_t id, const std::string& why) {
  const auto it = claims_.find(id);
  if (it == claims_.end()) {
    return;
  }
  Claim c = std::move(it->second);
  claims_.erase(it);
  stats_.routes_lost++;
  log_->warn("cluster.route_lost node={} name={} session={} reason=\"{}\"", config_.node_id,
             c.request.name, c.request.session_id, why);
  if (c.callbacks.lost) {
    c.callbacks.lost(why, why.find("taken over") != std::string::npos);
  }
}

// ---- claims ----------------------------------------------------------------------------

std::unique_ptr<tunnel::GateTicket> Registry::claim(tunnel::GateClaim request,
                                                    tunnel::GateCallbacks callbacks) {
  auto self = shared_from_this();
  const std::uint64_t id = next_claim_id_++;
  asio::post(ioc_, [self, id, request = std::move(request),
                    callbacks = std::move(callbacks)]() mutable {
    Claim c;
    c.key = RouteKey{request.name, request.pool ? RouteKind::pool : RouteKind::single,
                     self->config_.node_id,
                     cluster::session_component(request.session_id, self->boot_)};
    c.etcd_key = route_key(c.key);
    c.request = std::move(request);
    c.callbacks = std::move(callbacks);
    self->claims_.emplace(id, std::move(c));
    asio::co_spawn(
        self->ioc_, [self, id]() -> asio::awaitable<void> { co_await self->run_claim(id, false); },
        asio::detached);
  });
  return std::make_unique<Ticket>(weak_from_this(), id);
}

void Registry::cancel(std::uint64_t id) {
  const auto it = claims_.find(id);
  if (it == claims_.end()) {
    return;
  }
  Claim& c = it->second;
  if (c.state == ClaimState::pending) {
    c.cancelled = true;  // run_claim releases it if it wins
    return;
  }
  std::string key = c.etcd_key;
  const std::int64_t rev = c.mod_revision;
  claims_.erase(it);
  auto self = shared_from_this();
  asio::co_spawn(
      ioc_,
      [self, key = std::move(key), rev]() -> asio::awaitable<void> {
        co_await self->release(key, rev);
      },
      asio::detached);
}

asio::awaitable<void> Registry::run_claim(std::uint64_t id, bool reclaim) {
  auto self = shared_from_this();  // the claim outlives a Registry being torn down
  auto it = claims_.find(id);
  if (it == claims_.end()) {
    co_return;
  }
  Outcome o;
  if (!ready_ || !lease_.claims_allowed()) {
    o.answer = {tunnel::GateVerdict::unavailable, kUnavailable};
  } else {
    o = co_await try_claim(it->second, reclaim);
  }
  it = claims_.find(id);
  if (it == claims_.end()) {
    co_return;
  }
  Claim& c = it->second;
  if (o.lease_missing) {
    lease_.keepalive_unknown();
    set_lease_state_stat();
    lease_timer_.cancel();  // re-grant now; the re-grant re-claims the won routes
  }
  if (o.answer.verdict == tunnel::GateVerdict::won) {
    const bool was_pending = c.state == ClaimState::pending;
    c.state = ClaimState::won;
    log_->info("cluster.claimed name={} key={} revision={} reclaim={}", c.request.name,
               printable(c.etcd_key, 200), c.mod_revision, reclaim);
    if (reclaim) {
      stats_.reclaims++;
    }
    if (c.cancelled) {
      cancel(id);
      co_return;
    }
    if (was_pending && c.callbacks.decided) {
      c.callbacks.decided(o.answer);
    }
    co_return;
  }
  if (reclaim) {
    if (o.answer.verdict == tunnel::GateVerdict::unavailable) {
      co_return;  // kept: tried again when the lease is renewed or the watch resyncs
    }
    // Claimed by someone else while this node's hold lapsed (its lease expired, or an operator
    // deleted the key): the other claim stands.
    lose(id, o.answer.verdict == tunnel::GateVerdict::same_key_held
                 ? "was taken over by another session of your key while this node was cut off "
                   "from the registry"
                 : "is now held by another session (this node was cut off from the registry "
                   "meanwhile)");
    co_return;
  }
  Claim done = std::move(c);
  claims_.erase(it);
  if (!done.cancelled && done.callbacks.decided) {
    done.callbacks.decided(o.answer);
  }
}

asio::awaitable<Registry::Outcome> Registry::try_claim(Claim& c, bool reclaim) {
  // Copies: `c` lives in claims_, which may change while we wait on etcd.
  const tunnel::GateClaim req = c.request;
  const std::string my_key = c.etcd_key;
  const std::int64_t lease = lease_.id();
  Outcome o;
  o.answer = {tunnel::GateVerdict::unavailable, kUnavailable};
  if (std::string why = cache_.nesting(req.name, req.key_fingerprint); !why.empty()) {
    o.answer = {tunnel::GateVerdict::refused, why};
    co_return o;
  }
  const std::string host = host_prefix(req.name);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto r =
        co_await call(RegistryStats::range, "/v3/kv/range", range_request(host, prefix_end(host)));
    if (!r) {
      co_return o;
    }
    const RangeResult range = parse_range_response(*r);
    if (!range.error.empty()) {
      co_return o;
    }
    std::vector<std::string> others;  // their keys
    tunnel::HoldersView view;
    view.all_pool = view.all_same_key = view.all_same_group = true;
    bool other_binding = false;
    for (const KeyValue& kv : range.kvs) {
      if (kv.key == my_key) {
        if (reclaim && kv.lease == lease) {
          c.mod_revision = kv.mod_revision;  // still ours: nothing was lost
          o.answer = {tunnel::GateVerdict::won, {}};
          co_return o;
        }
        continue;  // an older lease's copy of our key: the put replaces it
      }
      const auto key = parse_route_key(kv.key);
      const auto value = key ? parse_route_value(kv.value) : std::nullopt;
      if (!key || !value) {
        stats_.values_skipped++;
        continue;
      }
      view.empty = false;
      view.all_pool = view.all_pool && key->kind == RouteKind::pool;
      view.all_same_key = view.all_same_key && value->fpr == req.key_fingerprint;
      view.all_same_group = view.all_same_group && value->group == req.pool_group;
      other_binding = other_binding || value->internal != req.internal;
      others.push_back(kv.key);
    }
    if (req.pool && !req.takeover && other_binding) {
      o.answer = {tunnel::GateVerdict::refused, tunnel::mixed_binding(req.name, req.internal)};
      co_return o;
    }
    const tunnel::ClaimDecision d =
        tunnel::decide_claim(req.name, req.pool, req.takeover && !reclaim, view);
    if (d.verdict == tunnel::ClaimVerdict::refuse) {
      // As EndpointRegistry's callers decide (session.cpp): only a plain same-key holder is
      // waited for; a pool is refused with its own message.
      const bool wait = !req.takeover && !req.pool && view.all_same_key && !view.all_pool;
      o.answer = {wait ? tunnel::GateVerdict::same_key_held : tunnel::GateVerdict::refused,
                  d.refusal};
      co_return o;
    }
    std::vector<std::string> compares;
    std::vector<std::string> ops;
    RegistryStats::Op op = RegistryStats::claim;
    if (d.verdict == tunnel::ClaimVerdict::replace) {
      op = RegistryStats::takeover;
      // Nothing under the name changed since our read: not the holders we delete, and no
      // holder that joined after it (comparing only the keys we read would let a pool member
      // that joined meanwhile stay beside us).
      compares.push_back(compare_unchanged_since(host, prefix_end(host), range.revision + 1));
      for (const auto& key : others) {
        ops.push_back(delete_op(key));
      }
    } else if (req.pool) {
      const std::string single = single_prefix(req.name);
      compares.push_back(compare_create(single, prefix_end(single), 0));
    } else {
      compares.push_back(compare_create(host, prefix_end(host), 0));
    }
    RouteValue value{req.key_fingerprint, req.pool_group, unix_ms(), req.internal};
    ops.push_back(put_op(my_key, encode_route_value(value), lease));
    auto t = co_await call(op, "/v3/kv/txn", txn_request(compares, ops));
    if (!t) {
      co_return o;
    }
    const TxnResult txn = parse_txn_response(*t);
    if (!txn.error.empty()) {
      o.lease_missing = lease_not_found(txn.error);
      log_->warn("cluster.claim_failed name={} error=\"{}\"", req.name, printable(txn.error, 200));
      co_return o;
    }
    if (txn.succeeded) {
      c.mod_revision = txn.revision;
      o.answer = {tunnel::GateVerdict::won, {}};
      co_return o;
    }
    // Someone changed the name between our read and our write: read again, once.
  }
  o.answer = {tunnel::GateVerdict::refused,
              req.name + " is already in use by another session (pick another name)"};
  co_return o;
}

asio::awaitable<void> Registry::release(std::string etcd_key, std::int64_t mod_revision) {
  // Only the revision we wrote: a successor's key under the same name is never ours to delete.
  std::vector<std::string> compares(1, compare_mod(etcd_key, mod_revision));
  std::vector<std::string> ops(1, delete_op(etcd_key));
  auto r = co_await call(RegistryStats::release, "/v3/kv/txn", txn_request(compares, ops));
  if (!r || !parse_txn_response(*r).error.empty()) {
    pending_releases_.emplace_back(std::move(etcd_key), mod_revision);
    co_return;
  }
  log_->debug("cluster.released key={} revision={}", printable(etcd_key, 200), mod_revision);
}

asio::awaitable<void> Registry::retry_releases() {
  auto todo = std::move(pending_releases_);
  pending_releases_.clear();
  for (auto& [key, rev] : todo) {
    co_await release(std::move(key), rev);
  }
}

}  // namespace gw::cluster

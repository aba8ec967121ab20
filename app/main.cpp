// snigate's entry point: parses the command line and wires the subsystems together (the
// only place that does). Deliberately thin: behaviour lives in sshd/, sni_router/,
// tunnel/ and keys/.
#include <signal.h>
#include <spdlog/async.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "app/admin_http.hpp"
#include "app/cli.hpp"
#include "app/config.hpp"
#include "app/event_log.hpp"
#include "app/gateway_backend.hpp"
#include "app/keys_command.hpp"
#include "cluster/registry.hpp"
#include "cluster/relay_dialer.hpp"
#include "cluster/relay_listener.hpp"
#include "common/cidr.hpp"
#include "keys/host_keys.hpp"
#include "keys/key_store.hpp"
#include "sni_router/listener.hpp"
#include "sshd/server.hpp"
#include "sshd/session_handle.hpp"
#include "tunnel/endpoint_registry.hpp"

namespace {

using boost::asio::ip::tcp;

/// A bad option value that only start-up can see (it needs the environment or a file):
/// one line, exit status 2, like the parser's refusals.
struct BadOption : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Loggers {
  /// The loggers' writer thread. First member, so it is destroyed last: its destructor writes
  /// every line still queued, and the loggers only hold it weakly.
  std::shared_ptr<spdlog::details::thread_pool> pool;
  std::shared_ptr<spdlog::logger> app, sshd, sni, tunnel, keys, cluster;
};

/// Lines the loggers may queue before the oldest are overwritten. spdlog allocates (and so
/// touches) every slot up front, about 340 bytes each: its default 8192 cost 2.7 MiB of resident
/// memory for nothing (bench/run's "PSS, no tunnels" went from 2.6 to 7.1 MiB). Refusal lines
/// are thinned to 50 a second per port, so 1024 holds many seconds of a flood's worth.
constexpr std::size_t kLogQueueLines = 1024;

Loggers make_loggers(const std::string& level) {
  // Asynchronous: an I/O thread only formats its line into a queue; one spdlog thread (one, so
  // lines stay in order) writes them to stderr. The pool is ours, not spdlog's global registry
  // one, so its lifetime is this struct's (STYLE: no globals).
  // Overflow policy overrun_oldest: when the queue is full (stderr blocked: a stalled journald
  // or a paused terminal, or a burst faster than the terminal) the oldest queued line is
  // overwritten. `block`, the default, would make the I/O thread wait for stderr, so a stuck
  // log reader would stall every tunnel on that thread. Lost lines are counted
  // (serve.stopped log_lines_overrun=); metrics and events never depend on log lines.
  auto pool = std::make_shared<spdlog::details::thread_pool>(kLogQueueLines, 1);
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto make = [&](const char* name) {
    auto l = std::make_shared<spdlog::async_logger>(name, sink, pool,
                                                    spdlog::async_overflow_policy::overrun_oldest);
    l->set_level(spdlog::level::from_str(level));
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v");
    // Tail-able logs. With an async logger the flush runs on the writer thread after the line.
    l->flush_on(spdlog::level::trace);
    return std::shared_ptr<spdlog::logger>(std::move(l));
  };
  return {pool,           make("app"),  make("sshd"),   make("sni"),
          make("tunnel"), make("keys"), make("cluster")};
}

tcp::endpoint resolve(const gw::app::ListenAddr& a) {
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(a.host, ec);
  if (!ec) {
    return {address, a.port};
  }
  boost::asio::io_context ioc;
  tcp::resolver resolver(ioc);
  const auto results = resolver.resolve(a.host, std::to_string(a.port));  // throws: start-up
  return *results.begin();
}

std::string to_string(const tcp::endpoint& e) {
  const auto a = e.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(e.port());
}

/// What to do about a listener that cannot bind, for the one-line refusal.
std::string bind_problem(const boost::system::error_code& ec, const std::string& option) {
  namespace error = boost::asio::error;
  if (ec == error::address_in_use) {
    return "address already in use (another process listens there): stop it, or choose "
           "another " +
           option;
  }
  if (ec == error::access_denied) {
    return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE): choose "
           "another " +
           option;
  }
  if (ec == boost::system::errc::address_not_available) {
    return "not an address of this host: use 0.0.0.0, [::] or one of its addresses";
  }
  return ec.message();
}

/// Resolves `a` and binds it with `listen(endpoint)`, which returns the bound endpoint. A
/// failure is the operator's to fix, not a crash: one line naming the option and the address
/// as given, exit status 2 (BadOption).
template <class Listen>
tcp::endpoint bind_listener(const std::string& option, const gw::app::ListenAddr& a,
                            Listen&& listen) {
  const std::string shown = option + " " + gw::app::format_listen_addr(a);
  tcp::endpoint where;
  try {
    where = resolve(a);
  } catch (const boost::system::system_error& e) {
    throw BadOption(shown + ": cannot resolve " + a.host + ": " + e.code().message());
  }
  try {
    return listen(where);
  } catch (const boost::system::system_error& e) {
    throw BadOption(shown + ": " + bind_problem(e.code(), option));
  }
}

/// Returns the descriptor limit now in force (0 if unknown).
std::uint64_t raise_fd_limit() {
  // Each tunnel connection needs a descriptor; the soft default (1024) is far too low. The
  // hard limit is the operator's (ulimit -Hn, LimitNOFILE=, --ulimit): we go up to it.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    return 0;
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
    ::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

/// The admin API's bearer token: --admin-token, the first line of --admin-token-file, else
/// SNIGATE_ADMIN_TOKEN. Empty: no token. Throws when the file can't be read (start-up).
std::string admin_token(const gw::app::ServeConfig& config) {
  if (!config.admin_token.empty()) {
    return config.admin_token;
  }
  if (!config.admin_token_file.empty()) {
    std::ifstream in(config.admin_token_file);
    std::string line;
    if (in) {
      std::getline(in, line);
    }
    // A file written on Windows or by `echo "token " >` must not hold an unmatchable token.
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.pop_back();
    }
    if (line.empty()) {
      throw BadOption("--admin-token-file " + config.admin_token_file +
                      ": cannot read a token from its first line");
    }
    return line;
  }
  const char* t = std::getenv("SNIGATE_ADMIN_TOKEN");
  return t != nullptr ? t : "";
}

/// How long start-up waits for etcd before refusing to start (exit 2): long enough for a
/// leader election after a restart, short enough not to look like a hang.
constexpr auto kClusterStartWait = std::chrono::seconds(5);

/// Cluster mode: registers this node in etcd (lease, node key, the route table loaded),
/// running `control` until it has or the wait is over. Throws BadOption when etcd can't be
/// reached or refuses the node.
std::shared_ptr<gw::cluster::Registry> start_cluster(const gw::app::ServeConfig& config,
                                                     boost::asio::io_context& control,
                                                     std::shared_ptr<spdlog::logger> log) {
  gw::cluster::RegistryConfig rc;
  std::string why;
  rc.endpoints = gw::cluster::parse_etcd_endpoints(config.cluster_etcd, why);  // checked by cli
  rc.node_id = config.node_id;
  if (config.relay_advertise) {
    rc.relay_advertise = gw::app::format_listen_addr(*config.relay_advertise);
  } else if (config.relay_listen) {
    rc.relay_advertise = gw::app::format_listen_addr(*config.relay_listen);
  }
  rc.version = SNIGATE_VERSION;
  rc.lease_ttl = config.cluster_lease_ttl;
  rc.request_timeout = std::chrono::milliseconds(1000);
  auto registry = std::make_shared<gw::cluster::Registry>(control, rc, std::move(log));
  registry->start();
  const auto deadline = std::chrono::steady_clock::now() + kClusterStartWait;
  while (!registry->ready() && std::chrono::steady_clock::now() < deadline) {
    control.run_for(std::chrono::milliseconds(50));
  }
  control.restart();
  if (!registry->ready()) {
    registry->stop();
    std::string problem = registry->start_problem();
    if (problem.starts_with("--node-id")) {
      throw BadOption(problem);
    }
    throw BadOption("--cluster-etcd " + config.cluster_etcd + ": etcd not reachable within " +
                    std::to_string(kClusterStartWait.count()) + " s (" +
                    (problem.empty() ? "no answer" : problem) +
                    "): start etcd, or fix the address");
  }
  return registry;
}

/// Loads authorized_keys and logs every skipped line; never throws for a missing file.
std::shared_ptr<const gw::keys::KeyStore> load_keys(const std::string& path, spdlog::logger& log) {
  std::vector<std::string> warnings;
  auto store = gw::keys::load_key_store(path, &warnings);
  for (const auto& w : warnings) {
    log.warn("keys.skip {}", w);
  }
  return store;
}

/// Re-reads authorized_keys when its modification time changes (checked every second), so
/// edits apply without a restart.
class KeyWatcher {
 public:
  KeyWatcher(boost::asio::io_context& ioc, std::string path,
             std::shared_ptr<gw::sshd::KeySource> keys,
             std::shared_ptr<gw::sshd::SessionDirectory> sessions,
             std::shared_ptr<spdlog::logger> log)
      : timer_(ioc),
        path_(std::move(path)),
        keys_(std::move(keys)),
        sessions_(std::move(sessions)),
        log_(std::move(log)) {
    stamp_ = stamp();
  }
  void start() {
    timer_.expires_after(std::chrono::seconds(1));
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) {
        return;
      }
      if (const auto now = stamp(); now != stamp_) {
        stamp_ = now;
        reload("file changed");
      }
      start();
    });
  }
  void reload(const char* why) {
    std::shared_ptr<const gw::keys::KeyStore> store;
    try {
      store = load_keys(path_, *log_);
    } catch (const std::exception& e) {
      // An unreadable file (wrong owner after an edit, a half-replaced directory) must neither
      // stop the gateway nor count as "no keys", which would close every session: keep the
      // keys in force and say what to fix. The next change to the file retries.
      log_->error(
          "keys.reload_failed path={} error=\"{}\" (still using the {} keys loaded "
          "before; make the file readable by the gateway)",
          path_, e.what(), keys_->get()->size());
      return;
    }
    log_->info("keys.reload path={} keys={} why=\"{}\"", path_, store->size(), why);
    keys_->set(store);
    for (const auto& session : sessions_->all()) {
      session->keys_changed(store);  // revoked keys lose their sessions, shrunk ones endpoints
    }
  }

 private:
  /// Changes whenever the file, or any file of the directory, is edited, added or removed.
  std::string stamp() const {
    namespace fs = std::filesystem;
    auto one = [](const fs::path& p) -> std::string {
      struct stat st {};
      if (::stat(p.c_str(), &st) != 0) {
        return p.string() + ":missing;";
      }
      return p.string() + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
             std::to_string(st.st_mtim.tv_nsec) + "/" + std::to_string(st.st_size) + "/" +
             std::to_string(st.st_ino) + ";";
    };
    std::string out = one(path_);
    std::error_code ec;
    if (fs::is_directory(path_, ec)) {
      // The non-throwing increment: a file removed while we list is a change, not a crash.
      for (fs::directory_iterator it(path_, ec), end; !ec && it != end; it.increment(ec)) {
        out += one(it->path());
      }
    }
    return out;
  }

  boost::asio::steady_timer timer_;
  std::string path_;
  std::shared_ptr<gw::sshd::KeySource> keys_;
  std::shared_ptr<gw::sshd::SessionDirectory> sessions_;
  std::shared_ptr<spdlog::logger> log_;
  std::string stamp_;
};

int serve(const gw::app::ServeConfig& config) {
  const Loggers log = make_loggers(config.log_level);
  const auto fd_limit = raise_fd_limit();
  ::signal(SIGPIPE, SIG_IGN);  // a vanished peer is an error code, not a dead process

  const auto host_key = gw::keys::load_or_generate_host_key(config.state_dir);
  // Loaded now, logged once every listener is bound: a refused start (port in use) then
  // prints its one line and nothing else.
  std::vector<std::string> key_warnings;
  auto keys = std::make_shared<gw::sshd::KeySource>(
      gw::keys::load_key_store(config.authorized_keys, &key_warnings));

  const unsigned threads =
      config.threads != 0 ? config.threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts;
  std::vector<boost::asio::io_context*> raw;
  for (unsigned i = 0; i < threads; ++i) {
    contexts.push_back(std::make_unique<boost::asio::io_context>(1));
    raw.push_back(contexts.back().get());
  }

  std::shared_ptr<gw::tunnel::EventSink> events = std::make_shared<gw::tunnel::NullEventSink>();
  std::shared_ptr<gw::app::JsonEventLog> event_log;
  if (!config.event_log.empty()) {
    // Throws: start-up. Its writer thread logs dropped events through the app logger.
    event_log = std::make_shared<gw::app::JsonEventLog>(config.event_log, log.app);
    events = event_log;
  }

  auto registry = std::make_shared<gw::tunnel::EndpointRegistry>();
  gw::sni::RouterConfig router;
  router.client_hello_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.client_hello_timeout);
  router.max_pending = static_cast<std::int64_t>(config.max_pending_hellos);
  router.max_pending_per_ip = static_cast<int>(config.max_pending_hellos_per_ip);
  for (const auto& cidr : config.trusted_proxy) {
    router.trusted_proxies.push_back(*gw::Cidr::parse(cidr));  // checked by the settings table
  }
  // The key watcher stats and reads files: it gets a thread of its own, so a slow filesystem
  // never stalls an I/O thread (sessions only ever read the in-memory KeyStore). The cluster
  // registry's etcd calls run there too: parsing a large watch answer stalls no session.
  // Declared before the listener: the listener holds the registry, whose timers live on it.
  boost::asio::io_context control(1);
  gw::sni::Listener tls(registry, router, log.sni, events);

  std::shared_ptr<gw::cluster::Registry> cluster;
  std::unique_ptr<gw::cluster::RelayListener> relay_in;
  std::shared_ptr<gw::cluster::RelayDialer> relay_out;
  auto relay_stats = std::make_shared<gw::cluster::RelayStats>();
  if (!config.cluster_etcd.empty()) {
    // The relay's files are checked before the node registers: a wrong certificate is a
    // start-up error, not a node other nodes would dial in vain.
    std::shared_ptr<gw::cluster::RelayTls> relay_tls;
    gw::cluster::RelayConfig rc;
    rc.node_id = config.node_id;
    rc.ca_file = config.cluster_ca;
    rc.cert_file = config.cluster_cert;
    rc.key_file = config.cluster_key;
    if (config.relay_listen) {
      try {
        relay_tls = gw::cluster::RelayTls::load(rc);
      } catch (const std::runtime_error& e) {
        throw BadOption(e.what());
      }
    }
    cluster = start_cluster(config, control, log.cluster);
    if (relay_tls) {
      relay_in = std::make_unique<gw::cluster::RelayListener>(relay_tls, rc, registry, relay_stats,
                                                              log.tunnel);
      bind_listener("--relay-listen", *config.relay_listen,
                    [&](const tcp::endpoint& where) { return relay_in->listen(raw, where); });
      gw::tunnel::BridgeConfig relay_bridge_config;
      relay_bridge_config.idle_timeout = config.idle_timeout;
      relay_bridge_config.tls_handshake_timeout = config.tls_handshake_timeout;
      relay_out = std::make_shared<gw::cluster::RelayDialer>(
          relay_tls, rc, cluster, registry, raw, relay_bridge_config, relay_stats, log.tunnel);
      // Before tls.listen(): the accepting threads read it without a lock.
      tls.set_cluster(cluster, relay_out);
    }
  }
  std::vector<tcp::endpoint> tls_bound;
  for (const auto& a : config.tls_listen) {
    tls_bound.push_back(bind_listener(
        "--tls-listen", a, [&](const tcp::endpoint& where) { return tls.listen(raw, where); }));
  }

  auto ctx = std::make_shared<gw::sshd::ServerContext>();
  ctx->registry = registry;
  ctx->claim_gate = cluster;  // null on a single node
  if (relay_out) {
    ctx->cluster_routes = cluster;  // teammates' ssh -L / -W to another node's internal endpoint
    ctx->relay = relay_out;
  }
  ctx->keys = keys;
  ctx->domain = *gw::tunnel::Hostname::parse(config.domain, false);
  ctx->advertise_port = config.advertise_port.value_or(tls_bound.front().port());
  ctx->idle_timeout = config.idle_timeout;
  ctx->tls_handshake_timeout = config.tls_handshake_timeout;
  ctx->login_grace = config.login_grace;
  ctx->max_connections_per_endpoint = config.max_connections_per_endpoint;
  ctx->startups = std::make_shared<gw::sshd::StartupTable>(
      static_cast<std::int64_t>(config.max_unauthenticated),
      static_cast<int>(config.max_unauthenticated_per_ip));
  ctx->max_sessions_per_key = config.max_sessions_per_key;
  ctx->max_endpoints_per_key = config.max_endpoints_per_key;
  ctx->log = log.sshd;
  ctx->tunnel_log = log.tunnel;
  ctx->events = events;
  gw::sshd::Server ssh(ctx, host_key.private_key_path);
  if (config.ssh_on_tls_port) {
    // Before the I/O threads run: the TLS acceptors read it without a lock.
    tls.set_ssh_handoff([&ssh](tcp::socket socket) { ssh.adopt(std::move(socket)); });
  }
  std::vector<tcp::endpoint> ssh_bound;
  for (const auto& a : config.ssh_listen) {
    ssh_bound.push_back(bind_listener(
        "--ssh-listen", a, [&](const tcp::endpoint& where) { return ssh.listen(raw, where); }));
  }

  auto admin_stats = std::make_shared<gw::app::AdminStats>();
  gw::app::GatewayBackend backend(ctx, tls, SNIGATE_VERSION, event_log, admin_stats);
  backend.set_cluster(cluster, relay_in ? relay_stats : nullptr);
  std::unique_ptr<gw::app::AdminServer> admin;
  std::string admin_text = "off";
  if (config.admin_listen) {
    const std::string token = admin_token(config);
    bind_listener("--admin-listen", *config.admin_listen, [&](const tcp::endpoint& where) {
      std::string why;
      if (!gw::app::admin_listen_allowed(where.address(), !token.empty(), &why)) {
        throw BadOption("--admin-listen " + to_string(where) + ": " + why);
      }
      gw::app::AdminOptions options;
      options.token = token;
      options.log = log.app;
      options.stats = admin_stats;  // the connection caps and timeouts are AdminOptions' defaults
      admin = std::make_unique<gw::app::AdminServer>(*raw.front(), backend, options);
      admin->listen(where);
      return admin->local_endpoint();
    });
    admin_text = to_string(admin->local_endpoint());
  }

  log.app->info("hostkey {} path={} fingerprint={}", host_key.generated ? "generated" : "loaded",
                host_key.private_key_path, host_key.fingerprint);
  for (const auto& w : key_warnings) {
    log.keys->warn("keys.skip {}", w);
  }
  if (keys->get()->size() == 0) {
    log.keys->warn(
        "keys.none path={} hint=\"nobody can open tunnels yet: add a line like "
        "'ssh-ed25519 AAAA... alice' (your ~/.ssh/id_ed25519.pub) to {}; it is re-read "
        "within a second\"",
        config.authorized_keys, config.authorized_keys);
  }

  KeyWatcher watcher(control, config.authorized_keys, keys, ctx->sessions, log.keys);
  watcher.start();

  // SIGTERM/SIGINT drain: stop accepting, end every endpoint, let open connections finish
  // (up to the drain timeout), then stop. A second signal stops at once.
  boost::asio::signal_set signals(*raw.front(), SIGINT, SIGTERM, SIGHUP);
  boost::asio::steady_timer drain_timer(*raw.front());
  bool draining = false;
  const auto drain_deadline_after = config.drain_timeout;
  std::chrono::steady_clock::time_point drain_deadline;
  const auto stop_all = [&] {
    control.stop();
    for (auto* c : raw) {
      c->stop();
    }
  };
  std::function<void()> drain_poll = [&] {
    if (ctx->sessions->size() == 0 || std::chrono::steady_clock::now() >= drain_deadline) {
      log.app->info("serve.drained sessions_left={}", ctx->sessions->size());
      if (cluster) {
        // Revoke the node lease first: its names leave the cluster now, not a TTL later.
        cluster->shutdown(stop_all);
      } else {
        stop_all();
      }
      return;
    }
    drain_timer.expires_after(std::chrono::milliseconds(100));
    drain_timer.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) {
        drain_poll();
      }
    });
  };
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signo) {
        if (ec) {
          return;
        }
        if (signo == SIGHUP) {
          boost::asio::post(control, [&watcher] { watcher.reload("SIGHUP"); });
          if (event_log) {
            // On the control thread too: reopening opens a file and waits for the event
            // writer to finish what was queued before the signal.
            boost::asio::post(control, [&log, &config, event_log] {
              std::string error;
              if (!event_log->reopen(&error)) {
                log.app->error("events.reopen_failed path={} error=\"{}\"", config.event_log,
                               error);
              }
            });
          }
          signals.async_wait(on_signal);
          return;
        }
        if (draining) {
          log.app->info("serve.stop signal={} (second signal: not waiting)", signo);
          stop_all();
          return;
        }
        draining = true;
        log.app->info("serve.drain signal={} timeout_s={}", signo == SIGINT ? "SIGINT" : "SIGTERM",
                      drain_deadline_after.count());
        ssh.stop();
        tls.stop();
        if (relay_in) {
          relay_in->stop();
        }
        if (admin) {
          admin->stop();
        }
        for (const auto& session : ctx->sessions->all()) {
          session->drain();
        }
        drain_deadline = std::chrono::steady_clock::now() + drain_deadline_after;
        drain_poll();
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);

  std::string ssh_list, tls_list;
  for (const auto& e : ssh_bound) {
    ssh_list += (ssh_list.empty() ? "" : ",") + to_string(e);
  }
  for (const auto& e : tls_bound) {
    tls_list += (tls_list.empty() ? "" : ",") + to_string(e);
  }
  log.app->info(
      "serve.ready ssh={} tls={} admin={} domain={} advertise_port={} threads={} keys={} "
      "fd_limit={}",
      ssh_list, tls_list, admin_text, config.domain, ctx->advertise_port, threads,
      keys->get()->size(), fd_limit);
  if (fd_limit != 0 && fd_limit < 4096) {
    log.app->warn(
        "serve.fd_limit limit={} (each open public connection takes a descriptor; "
        "raise it: ulimit -Hn, LimitNOFILE= or podman --ulimit nofile=)",
        fd_limit);
  }

  std::vector<std::thread> workers;
  workers.emplace_back([&control] {
    auto guard = boost::asio::make_work_guard(control);
    control.run();
  });
  for (unsigned i = 1; i < threads; ++i) {
    workers.emplace_back([c = raw[i]] {
      auto guard = boost::asio::make_work_guard(*c);
      c->run();
    });
  }
  {
    auto guard = boost::asio::make_work_guard(*raw.front());
    raw.front()->run();
  }
  for (auto& w : workers) {
    w.join();
  }
  log.app->info("serve.stopped events_dropped={} log_lines_overrun={}",
                event_log ? event_log->dropped() : 0, log.pool->overrun_counter());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "keys") {
    // Its settings (--state-dir, SNIGATE_AUTHORIZED_KEYS, --config ...) go through the same
    // parser as serve's: `podman exec snigate snigate keys list` finds the gateway's file.
    return gw::app::run_keys_command(std::vector<std::string>(argv + 2, argv + argc),
                                     gw::app::process_environment(), gw::app::read_text_file,
                                     std::cin, std::cout, std::cerr);
  }
  const gw::app::ParseResult parsed =
      gw::app::parse_args(argc, argv, gw::app::process_environment());
  if (!parsed.error.empty()) {
    std::fprintf(stderr, "%s\n", parsed.error.c_str());
    return 2;
  }
  if (parsed.print_config && parsed.command == gw::app::Command::serve) {
    std::fputs(gw::app::to_toml(parsed.config, &parsed.origins).c_str(), stdout);
    return 0;
  }
  try {
    switch (parsed.command) {
      case gw::app::Command::help:
        std::fputs(gw::app::usage_text().c_str(), stdout);
        return 0;
      case gw::app::Command::version:
        std::printf("snigate %s\n", SNIGATE_VERSION);
        return 0;
      case gw::app::Command::hostkey: {
        // Never generates: a key made here would not be the one the gateway serves (another
        // state dir, another container), and users would pin the wrong fingerprint.
        const auto key = gw::keys::load_host_key(parsed.config.state_dir);
        if (!key) {
          std::fprintf(stderr,
                       "snigate: hostkey: no host key at %s (state_dir %s from %s; `snigate "
                       "serve` creates it on first start: give the gateway's --state-dir, "
                       "SNIGATE_STATE_DIR or --config)\n",
                       gw::keys::host_key_path(parsed.config.state_dir).c_str(),
                       parsed.config.state_dir.c_str(), parsed.origins.at("state_dir").c_str());
          return 1;
        }
        std::printf("%s %s\n", key->fingerprint.c_str(), key->public_line.c_str());
        return 0;
      }
      case gw::app::Command::serve:
        return serve(parsed.config);
      default:
        std::fprintf(stderr, "snigate: this command is not available yet\n");
        return 2;
    }
  } catch (const BadOption& e) {
    std::fprintf(stderr, "snigate: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snigate: %s\n", e.what());
    return 1;
  }
}

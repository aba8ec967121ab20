"""Cluster mode against real processes: one etcd (Debian's) and snigate nodes on 127.0.1.x with
real `ssh -R` (CLUSTER.md), lease TTL 2 s. The relay between nodes is not here: these prove the
registry side (one owner cluster-wide, takeover across nodes, a dead node's names freed, fail
static through an etcd outage)."""

import signal
import time

from clusterlib import LEASE_TTL, cluster, etcd  # noqa: F401 (fixtures)
from conftest import SNIGATE_BIN, free_closed_port, fwd, https_get, run, wait_for


def keys_text(keys) -> str:
    # alice holds *.alice.test; dave may name app.alice.test too (a second key for one name).
    return (f'permitlisten="*.alice.test:443" {keys.pub("alice")}\n'
            f'permitlisten="app.alice.test:443" {keys.pub("dave")}\n')


def test_cluster_option_without_etcd_is_refused(tmp_path):
    # Proves: a cluster option without --cluster-etcd is a one-line error naming it, exit 2.
    p = run([SNIGATE_BIN, "serve", "--node-id", "n1", "--state-dir", str(tmp_path)], check=False, text=True)
    assert p.returncode == 2, p
    assert p.stderr.strip().splitlines() == [
        "snigate: --node-id is a cluster option: add --cluster-etcd http://HOST:PORT (cluster "
        "mode), or drop it"], p.stderr


def test_unreachable_etcd_is_refused_at_start(tmp_path):
    # Proves: an etcd that can't be reached at start is one line naming --cluster-etcd and what
    # to do, exit 2, after the bounded wait (not a hang).
    url = f"http://127.0.0.1:{free_closed_port()}"
    t0 = time.monotonic()
    p = run([SNIGATE_BIN, "serve", "--cluster-etcd", url, "--node-id", "n1",
             "--state-dir", str(tmp_path), "--ssh-listen", "127.0.0.1:0", "--tls-listen",
             "127.0.0.1:0", "--admin-listen", "off"], check=False, timeout=30, text=True)
    assert p.returncode == 2, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"snigate: --cluster-etcd {url}: etcd not reachable within 5 s"), lines
    assert lines[0].endswith("start etcd, or fix the address"), lines
    assert time.monotonic() - t0 < 15


def test_one_owner_cluster_wide(cluster, keys, upstream, client_ctx):
    # Proves: a name held on node 1 is refused to another key's session on node 2 with the
    # single-node message, etcd holds one route for it, and the holder keeps serving.
    n1 = cluster.node(1, authorized_keys=keys_text(keys))
    n2 = cluster.node(2, authorized_keys=keys_text(keys))
    holder = n1.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    cluster.wait_holders("app.alice.test", ["n1"], 10)
    rival = n2.tunnel([fwd("app.alice.test", upstream)], key="dave", exit_on_forward_failure=False)
    rival.start(wait=False)
    wait_for(lambda: "app.alice.test" in rival.stderr() or not rival.running(), 20,
             "the refusal on node 2")
    assert not rival.urls(), rival.describe()
    refusal = [ln for ln in rival.stderr().splitlines() if "app.alice.test" in ln]
    assert any("app.alice.test is held by another key's session: pick another name" in ln
               for ln in refusal), refusal
    assert cluster.etcd.holders("app.alice.test") == ["n1"]
    assert holder.running(), holder.describe()
    assert https_get(n1.tls_port, "app.alice.test", client_ctx, host=n1.host).status == 200


def test_takeover_across_nodes(cluster, keys, upstream_factory, client_ctx):
    # Proves: `tls --takeover` by the same key on node 2 moves the name there at once; node 1
    # closes its forward, tells its client why and stops routing the name.
    n1 = cluster.node(1, authorized_keys=keys_text(keys))
    n2 = cluster.node(2, authorized_keys=keys_text(keys))
    old_up, new_up = upstream_factory("http", "old"), upstream_factory("http", "new")
    old = n1.tunnel([fwd("app.alice.test", old_up)], key="alice").start()
    cluster.wait_holders("app.alice.test", ["n1"], 10)
    new = n2.tunnel([fwd("app.alice.test", new_up)], key="alice", command="tls --takeover").start()
    assert cluster.etcd.holders("app.alice.test") == ["n2"]
    wait_for(lambda: "was taken over by a newer session of your key on node n2 (--takeover)"
             in old.stderr(), 10, "node 1's client to be told")
    assert old.wait_exit(10) == 0, old.describe()
    n1.wait_unrouted("app.alice.test", 10)
    assert https_get(n2.tls_port, "app.alice.test", client_ctx,
                     host=n2.host).body.startswith("hello from new")
    assert new.running(), new.describe()


def test_killed_node_frees_its_names_within_ttl(cluster, keys, upstream):
    # Proves: after `kill -9` of the owner node, its names leave etcd within TTL + 1 s, and a
    # session on another node then gets the name without --takeover.
    n1 = cluster.node(1, authorized_keys=keys_text(keys))
    n2 = cluster.node(2, authorized_keys=keys_text(keys))
    n1.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    cluster.wait_holders("app.alice.test", ["n1"], 10)
    n1.proc.kill()
    n1.proc.wait(10)
    n1.expect_exit = True
    t0 = time.monotonic()
    cluster.wait_holders("app.alice.test", [], 3 * LEASE_TTL)
    freed = time.monotonic() - t0
    print(f"names freed {freed:.2f} s after kill -9 (TTL {LEASE_TTL} s)")
    assert freed <= LEASE_TTL + 1, freed
    n2.tunnel([fwd("app.alice.test", upstream)], key="dave").start()
    cluster.wait_holders("app.alice.test", ["n2"], 10)


def test_etcd_outage_fails_static(cluster, keys, upstream, client_ctx):
    # Proves: with etcd stopped, a tunnel keeps working on its node, a new claim is refused with
    # "registry unavailable, retry", and claims work again once etcd is back (the old route kept).
    n1 = cluster.node(1, authorized_keys=keys_text(keys))
    n2 = cluster.node(2, authorized_keys=keys_text(keys))
    n1.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    cluster.wait_holders("app.alice.test", ["n1"], 10)
    cluster.etcd.stop()
    try:
        refused = n2.tunnel([fwd("b.alice.test", upstream)], key="alice",
                            exit_on_forward_failure=False)
        refused.start(wait=False)
        wait_for(lambda: "registry unavailable, retry" in refused.stderr() or not refused.running(),
                 20, "the claim to be refused while etcd is down")
        assert "snigate: cannot forward b.alice.test: registry unavailable, retry" in \
            refused.stderr(), refused.describe()
        # Beyond a whole TTL without etcd, the tunnel still serves visitors on its node.
        time.sleep(0)  # (nothing to wait for: the checks below poll)
        deadline = time.monotonic() + 2 * LEASE_TTL
        while time.monotonic() < deadline:
            assert https_get(n1.tls_port, "app.alice.test", client_ctx, host=n1.host).status == 200
    finally:
        cluster.etcd.start()
    again = n2.tunnel([fwd("c.alice.test", upstream)], key="alice", exit_on_forward_failure=False)

    def claimed():
        t = n2.tunnel([fwd("c.alice.test", upstream)], key="alice", exit_on_forward_failure=False)
        t.start(wait=False)
        wait_for(lambda: t.urls() or "c.alice.test" in t.stderr() or not t.running(), 20,
                 "a claim after etcd came back")
        ok = bool(t.urls())
        if not ok:
            t.close()
        return ok

    del again
    wait_for(claimed, 20, "claims to work again after etcd restarted", interval=0.5)
    assert cluster.etcd.holders("app.alice.test") == ["n1"]
    assert https_get(n1.tls_port, "app.alice.test", client_ctx, host=n1.host).status == 200


def test_pool_across_nodes(cluster, keys, upstream):
    # Proves: `tls --pool` sessions of one key on two nodes both join the name's pool in etcd,
    # and a session without --pool on a third node is refused with the single-node message.
    n1 = cluster.node(1, authorized_keys=keys_text(keys))
    n2 = cluster.node(2, authorized_keys=keys_text(keys))
    n3 = cluster.node(3, authorized_keys=keys_text(keys))
    n1.tunnel([fwd("app.alice.test", upstream)], key="alice", command="tls --pool").start()
    n2.tunnel([fwd("app.alice.test", upstream)], key="alice", command="tls --pool").start()
    cluster.wait_holders("app.alice.test", ["n1", "n2"], 10)
    assert all("/pool/" in k for k in cluster.etcd.routes()), cluster.etcd.routes()
    lone = n3.tunnel([fwd("app.alice.test", upstream)], key="alice", exit_on_forward_failure=False)
    lone.start(wait=False)
    wait_for(lambda: "app.alice.test" in lone.stderr() or not lone.running(), 20,
             "the refusal on node 3")
    assert "app.alice.test is pooled by other sessions: add --pool to share it" in lone.stderr(), \
        lone.describe()
    assert sorted(cluster.etcd.holders("app.alice.test")) == ["n1", "n2"]


def test_admin_api_shows_the_cluster(cluster, keys, upstream):
    # Proves: GET /api/cluster lists the nodes, the lease state and the registry revision;
    # /api/endpoints on one node lists another node's endpoint with its owner; /metrics has the
    # registry operations and the lease state.
    n1 = cluster.node(1, authorized_keys=keys_text(keys), admin_listen="127.0.0.1:0")
    n2 = cluster.node(2, authorized_keys=keys_text(keys), admin_listen="127.0.0.1:0")
    n1.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    cluster.wait_holders("app.alice.test", ["n1"], 10)

    def remote_listed():
        eps = n2.admin("GET", "/api/endpoints").json()["endpoints"]
        return [e for e in eps if e["url"].startswith("tls://app.alice.test")]

    listed = wait_for(remote_listed, 10, "node 2 to list node 1's endpoint")
    assert listed[0]["node"] == "n1" and listed[0]["id"].startswith("n1:"), listed
    local = n1.admin("GET", "/api/endpoints").json()["endpoints"]
    assert [e["node"] for e in local] == ["n1"] and local[0]["id"].startswith("ep_"), local
    view = n2.admin("GET", "/api/cluster").json()
    assert view["node_id"] == "n2" and view["lease_state"] == "live", view
    assert view["etcd"] == f"127.0.0.1:{cluster.etcd.client_port}"
    assert view["revision"] > 0 and view["routes"] == 1, view
    assert sorted(n["id"] for n in view["nodes"]) == ["n1", "n2"], view
    assert [n["self"] for n in view["nodes"] if n["id"] == "n2"] == [True]
    metrics = n1.admin("GET", "/metrics").body.decode()
    assert 'snigate_cluster_lease_state{state="live"} 1' in metrics
    claims = [l for l in metrics.splitlines()
              if l.startswith('snigate_registry_operations_total{op="claim",result="ok"}')]
    assert claims and int(claims[0].split()[-1]) >= 1, claims
    assert "snigate_registry_operation_seconds_bucket" in metrics


def test_single_node_has_no_cluster_api(gateway_factory):
    # Proves: without --cluster-etcd, /api/cluster answers 404 with what to do, and /metrics
    # has no cluster families (nothing changes on a single node).
    gw = gateway_factory(admin_listen="127.0.0.1:0")
    r = gw.admin("GET", "/api/cluster")
    assert r.status == 404 and b"--cluster-etcd" in r.body, r
    assert b"snigate_cluster_" not in gw.admin("GET", "/metrics").body


def test_stopped_node_reclaims_or_closes_on_resume(cluster, keys, upstream):
    # Proves: a node stopped (SIGSTOP) past its lease loses its names; on SIGCONT it gets a new
    # lease, claims back the name nobody took and closes (telling its client) the one another
    # node's session took meanwhile: one owner per name once it settles.
    n1 = cluster.node(1, authorized_keys=keys_text(keys))
    n2 = cluster.node(2, authorized_keys=keys_text(keys))
    t = n1.tunnel([fwd("app.alice.test", upstream), fwd("b.alice.test", upstream)],
                  key="alice").start()
    cluster.wait_holders("app.alice.test", ["n1"], 10)
    cluster.wait_holders("b.alice.test", ["n1"], 10)
    n1.proc.send_signal(signal.SIGSTOP)
    try:
        cluster.wait_holders("app.alice.test", [], 3 * LEASE_TTL)
        cluster.wait_holders("b.alice.test", [], 3 * LEASE_TTL)
        n2.tunnel([fwd("app.alice.test", upstream)], key="dave").start()
        cluster.wait_holders("app.alice.test", ["n2"], 10)
    finally:
        n1.proc.send_signal(signal.SIGCONT)
    cluster.wait_holders("b.alice.test", ["n1"], 4 * LEASE_TTL)
    wait_for(lambda: "app.alice.test" in t.stderr() and "now held by another session" in t.stderr(),
             4 * LEASE_TTL, "node 1's client to be told it lost app.alice.test")
    assert cluster.etcd.holders("app.alice.test") == ["n2"]
    assert t.running(), t.describe()  # b.alice.test still served
    n1.wait_unrouted("app.alice.test", 10)
    assert n1.routed("b.alice.test")


def test_etcd_endpoint_list_fails_over(cluster, keys, upstream):
    # Proves: with several --cluster-etcd endpoints, a dead first one is skipped: the node
    # starts and its claims land in etcd through the next.
    dead = f"http://127.0.0.1:{free_closed_port()}"
    n1 = cluster.node(1, authorized_keys=keys_text(keys),
                      args=["--cluster-etcd", f"{dead},{cluster.etcd.url}"])
    n1.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    cluster.wait_holders("app.alice.test", ["n1"], 10)


def test_clean_stop_frees_names_at_once(cluster, keys, upstream):
    # Proves: SIGTERM revokes the node lease before exiting: its names and node key leave etcd
    # at once, not a TTL later.
    n1 = cluster.node(1, authorized_keys=keys_text(keys))
    n1.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    cluster.wait_holders("app.alice.test", ["n1"], 10)
    assert list(cluster.etcd.keys("nodes/")) == ["/snigate/v1/nodes/n1"]
    assert n1.stop() == 0
    assert cluster.etcd.routes() == {} and cluster.etcd.keys("nodes/") == {}
    assert "cluster.lease_revoked node=n1" in n1.log_text() and " ok=true" in n1.log_text()


def test_per_key_limit_counts_the_cluster(cluster, keys, upstream):
    # Proves: --max-endpoints-per-key counts the key's endpoints on every node: with a limit of
    # 1 and one name held on node 1, the same key is refused a second name on node 2.
    limit = ["--max-endpoints-per-key", "1"]
    n1 = cluster.node(1, args=limit, authorized_keys=keys_text(keys))
    n2 = cluster.node(2, args=limit, authorized_keys=keys_text(keys), admin_listen="127.0.0.1:0")
    n1.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    wait_for(lambda: n2.admin("GET", "/api/cluster").json()["routes"] == 1, 10,
             "node 2 to see node 1's route")
    t = n2.tunnel([fwd("b.alice.test", upstream)], key="alice", exit_on_forward_failure=False)
    t.start(wait=False)
    wait_for(lambda: "b.alice.test" in t.stderr() or not t.running(), 20, "the refusal")
    assert "this key already holds 1 endpoints (the limit): cancel one first" in t.stderr(), \
        t.describe()
    assert cluster.etcd.holders("b.alice.test") == []

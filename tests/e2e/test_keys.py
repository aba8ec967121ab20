"""Keys and authorization while the gateway runs: live reload of authorized_keys (a file or a
directory), revocation, expiry, restrict, permitlisten shrinking, hostname-policy bypass attempts,
and the claim rules `tls --pool` and `tls --takeover` (DESIGN sections 3 and 5, issue 4)."""

import collections
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import (ALERT_UNRECOGNIZED_NAME, SNIGATE_BIN, clean_env, client_hello, fwd,
                      https_get, is_alert, raw_exchange, read_events, wait_for)

REVOKED_MSG = "snigate: your key was removed from authorized_keys; closing this session"
RESTRICT_MSG = "this key may not open tunnels"


def ended_reason(gw, key_name: str, timeout: float = 5.0) -> str:
    """The reason in session_ended.v0 for the (first) session of `key_name` (needs --event-log)."""
    ev = wait_for(lambda: [e for e in read_events(gw.dir / "events.jsonl")
                           if e["event_type"] == "session_ended.v0"
                           and e["object"]["key_name"] == key_name], timeout,
                  f"session_ended for {key_name}")
    return ev[0]["object"]["reason"]


def deleted_reasons(gw) -> dict:
    """{endpoint url: reason} from endpoint_deleted.v0 events (needs --event-log)."""
    return {e["object"]["url"].split("://")[1].split(":")[0]: e["object"]["reason"]
            for e in read_events(gw.dir / "events.jsonl") if e["event_type"] == "endpoint_deleted.v0"}


def line(keys, name: str, options: str = "") -> str:
    """One authorized_keys line for `name`'s key, with `options` in front (if any)."""
    return f"{options} {keys.pub(name)}\n" if options else f"{keys.pub(name)}\n"


def attempt(gateway, forwards, key, timeout=20.0, **kw):
    """Starts a `tls` session and waits until it shows every banner URL (returns it, running) or
    exits (returns it, finished)."""
    t = gateway.tunnel(forwards, key=key, **kw)
    t.start(wait=False)
    wait_for(lambda: len(t.urls()) >= len(forwards) or not t.running(), timeout,
             f"{key}'s session to come up or exit")
    return t


def refused(t, name: str) -> bool:
    """The session's claim of `name` was refused: ssh gave up on the forward, or the gateway said so."""
    out = t.all_output()
    return not t.urls() and ("remote port forwarding failed" in out or name in t.stderr())


def wait_refused(t, name: str, timeout: float = 20.0):
    wait_for(lambda: refused(t, name) or not t.running(), timeout, f"the claim of {name} to be refused")
    assert refused(t, name), t.describe()
    t.close()


# ---- reload -----------------------------------------------------------------------------------


def test_key_added_while_running_works_within_2s(gateway_factory, keys, upstream, client_ctx):
    # Proves: a key appended to authorized_keys while the gateway runs can log in and forward
    # within 2 s, without a restart (no attempt started more than 2 s after the write is refused).
    gw = gateway_factory(authorized_keys=line(keys, "alice", 'permitlisten="*.alice.test:443"'))
    before = gw.tunnel([fwd("app.bob.test", upstream)], key="dave")
    assert before.run_to_exit() == 255 and "Permission denied" in before.all_output(), before.describe()

    with open(gw.authorized_keys, "a") as f:
        f.write(line(keys, "dave", 'permitlisten="app.bob.test:443"'))
    t0 = time.monotonic()
    refused_starts = []

    def try_once():
        started = time.monotonic() - t0
        t = attempt(gw, [fwd("app.bob.test", upstream)], key="dave")
        if t.urls():
            return t
        refused_starts.append(started)
        t.close()
        return None

    t = wait_for(try_once, 15, "dave's key to be accepted after it was added", interval=0.1)
    late = [s for s in refused_starts if s > 2.0]
    assert not late, f"still refused in attempts started {late} s after the key was added"
    assert https_get(gw.tls_port, "app.bob.test", client_ctx).status == 200
    assert t.running()


def test_removed_key_closes_live_session_and_endpoint(gateway_factory, keys, upstream_factory,
                                                      client_ctx):
    # Proves: deleting a key's line closes its live session with the documented message and exit
    # status 1, its endpoint stops routing (unrecognized_name), another key's session is untouched,
    # and the event log says key_revoked.
    gateway = gateway_factory(args=["--event-log", "events.jsonl"])
    a_up, b_up = upstream_factory("http", "alice"), upstream_factory("http", "bob")
    alice = gateway.tunnel([fwd("app.alice.test", a_up)], key="alice").start()
    bob = gateway.tunnel([fwd("app.bob.test", b_up)], key="bob").start()
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).body.startswith("hello from alice")

    gateway.authorized_keys.write_text(line(keys, "bob", 'permitlisten="*.bob.test:443"'))
    rc = alice.wait_exit(10)
    assert rc == 1, f"exit status {rc}\n{alice.describe()}"
    assert REVOKED_MSG in alice.stderr(), alice.describe()
    gateway.wait_unrouted("app.alice.test", 5)
    assert bob.running(), bob.describe()
    assert https_get(gateway.tls_port, "app.bob.test", client_ctx).body.startswith("hello from bob")
    assert "removed" not in bob.stderr()
    assert ended_reason(gateway, "alice") == "key_revoked"


def test_sighup_reloads_authorized_keys(gateway_factory, keys, upstream):
    # Proves: SIGHUP re-reads authorized_keys: a key removed while the file's mtime is restored
    # (so only the signal can reveal the change) loses its session.
    gw = gateway_factory()
    alice = gw.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    st = os.stat(gw.authorized_keys)
    text = gw.authorized_keys.read_text().replace(keys.pub("alice"), keys.pub("zelda"))
    gw.authorized_keys.write_text(text)
    assert os.stat(gw.authorized_keys).st_size == st.st_size
    # Same size, inode and mtime as before: the 1 s watcher sees nothing new, only SIGHUP can.
    os.utime(gw.authorized_keys, ns=(st.st_atime_ns, st.st_mtime_ns))
    gw.proc.send_signal(signal.SIGHUP)
    assert alice.wait_exit(10) == 1, alice.describe()
    assert REVOKED_MSG in alice.stderr(), alice.describe()
    gw.wait_unrouted("app.alice.test", 5)


def test_unreadable_authorized_keys_on_reload_keeps_the_keys_in_force(gateway_factory, keys,
                                                                      upstream, client_ctx):
    # Proves: when authorized_keys becomes unreadable while the gateway runs (here a Unix socket
    # in its place: open() fails even for root), the gateway neither dies nor drops its keys: it
    # logs keys.reload_failed, live sessions stay, new logins with the old keys work, and the
    # next good version of the file applies.
    gw = gateway_factory()
    alice = gw.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    good = gw.authorized_keys.read_text()
    gw.authorized_keys.unlink()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(gw.authorized_keys))
        wait_for(lambda: "keys.reload_failed" in gw.log_text(), 10, "keys.reload_failed")
        assert gw.running(), "the gateway died on an unreadable authorized_keys"
        assert alice.running()
        gw.tunnel([fwd("app.bob.test", upstream)], key="bob").start()
        assert https_get(gw.tls_port, "app.bob.test", client_ctx).status == 200
    finally:
        sock.close()
    gw.authorized_keys.unlink()
    gw.authorized_keys.write_text(good.replace(keys.pub("alice"), keys.pub("zelda")))
    assert alice.wait_exit(10) == 1, alice.describe()  # the good file applies again


def test_expired_key_refused_future_expiry_accepted(gateway_factory, keys, upstream, client_ctx):
    # Proves: expiry-time in the past refuses authentication; one in the future does not.
    gw = gateway_factory(authorized_keys=(
        line(keys, "alice", 'expiry-time="20200101",permitlisten="*.alice.test:443"')
        + line(keys, "bob", 'expiry-time="20991231",permitlisten="*.bob.test:443"')))
    t = gw.tunnel([fwd("app.alice.test", upstream)], key="alice")
    assert t.run_to_exit() == 255, t.describe()
    assert "Permission denied" in t.all_output(), t.describe()
    assert is_alert(gw.probe("app.alice.test"), ALERT_UNRECOGNIZED_NAME)
    gw.tunnel([fwd("app.bob.test", upstream)], key="bob").start()
    assert https_get(gw.tls_port, "app.bob.test", client_ctx).status == 200


def test_key_expiring_while_running_closes_session(gateway_factory, keys, upstream):
    # Proves: giving a live session's key an expiry-time in the past (by editing the file) ends
    # that session with a message, its endpoint goes away, and the event log says key_expired.
    gateway = gateway_factory(args=["--event-log", "events.jsonl"])
    t = gateway.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    gateway.authorized_keys.write_text(
        line(keys, "alice", 'expiry-time="20200101",permitlisten="*.alice.test:443"'))
    rc = t.wait_exit(10)
    assert rc == 1, t.describe()
    assert "snigate: your key expired" in t.stderr(), t.describe()
    gateway.wait_unrouted("app.alice.test", 5)
    assert ended_reason(gateway, "alice") == "key_expired"


@pytest.mark.parametrize("options", ['restrict,permitlisten="*.alice.test:443"',
                                     'no-port-forwarding,permitlisten="*.alice.test:443"'])
def test_restricted_key_cannot_forward(gateway_factory, keys, upstream, options):
    # Proves: restrict / no-port-forwarding keys log in but every forward is refused, with a message
    # saying why; `restrict,port-forwarding` (the control) may forward.
    gw = gateway_factory(authorized_keys=(
        line(keys, "alice", options)
        + line(keys, "bob", 'restrict,port-forwarding,permitlisten="*.bob.test:443"')))
    strict = gw.tunnel([fwd("app.alice.test", upstream)], key="alice")
    assert strict.run_to_exit() != 0, strict.describe()
    assert "remote port forwarding failed" in strict.all_output(), strict.describe()
    assert "Permission denied" not in strict.all_output(), "the key should log in, just not forward"
    soft = attempt(gw, [fwd("app.alice.test", upstream)], key="alice", exit_on_forward_failure=False)
    wait_for(lambda: RESTRICT_MSG in soft.stderr() or not soft.running(), 20, "the restrict message")
    assert RESTRICT_MSG in soft.stderr(), soft.describe()
    assert is_alert(gw.probe("app.alice.test"), ALERT_UNRECOGNIZED_NAME)
    gw.tunnel([fwd("app.bob.test", upstream)], key="bob").start()
    gw.wait_routed("app.bob.test", 5)


def test_permitlisten_shrink_removes_only_that_endpoint(gateway_factory, keys, upstream_factory,
                                                        client_ctx):
    # Proves: narrowing a key's permitlisten removes the endpoints it may no longer hold (the user is
    # told which; endpoint_deleted says key_no_longer_allows), keeps the others and the session.
    gateway = gateway_factory(args=["--event-log", "events.jsonl"])
    up = upstream_factory("http", "up")
    t = gateway.tunnel([fwd("app.alice.test", up), fwd("deep.x.alice.test", up)], key="alice").start()
    gateway.wait_routed("deep.x.alice.test", 5)
    gateway.authorized_keys.write_text(
        line(keys, "alice", 'permitlisten="app.alice.test:443"')
        + line(keys, "bob", 'permitlisten="*.bob.test:443"'))
    gateway.wait_unrouted("deep.x.alice.test", 5)
    wait_for(lambda: "tls://deep.x.alice.test" in t.stderr(), 5, "the removal message")
    msg = [ln for ln in t.stderr().splitlines() if "tls://deep.x.alice.test" in ln]
    assert any(ln.startswith("snigate: tls://deep.x.alice.test") and " removed: " in ln for ln in msg), msg
    assert t.running(), t.describe()
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).status == 200
    assert "tls://app.alice.test" not in "".join(msg)
    assert deleted_reasons(gateway) == {"deep.x.alice.test": "key_no_longer_allows"}


def test_permitlisten_shrink_closes_the_removed_endpoints_open_connections(
        gateway_factory, keys, upstream_factory, pki):
    # Proves: the connections already open to an endpoint a narrowed permitlisten removes are
    # closed too (as when the key is removed), with close_reason key_no_longer_allows, while a
    # connection to the endpoint that stays keeps working.
    from conftest import MemTls, read_events
    gateway = gateway_factory(args=["--event-log", "events.jsonl"])
    echo = upstream_factory("echo")
    t = gateway.tunnel([fwd("app.alice.test", echo), fwd("deep.x.alice.test", echo)],
                       key="alice").start()
    gateway.wait_routed("deep.x.alice.test", 5)
    gone, kept = (MemTls.connect(gateway.tls_port, pki.client_context(), n, timeout=20)
                  for n in ("deep.x.alice.test", "app.alice.test"))
    for c in (gone, kept):
        c.handshake()
        c.write(b"ping\n")
        assert c.read_exactly(5) == b"ping\n"
    gateway.authorized_keys.write_text(line(keys, "alice", 'permitlisten="app.alice.test:443"'))
    assert gone.read_until_eof() == b"", "the removed endpoint's connection must end"
    kept.write(b"still\n")
    assert kept.read_exactly(6) == b"still\n"
    wait_for(lambda: [e for e in read_events(gateway.dir / "events.jsonl")
                      if e["event_type"] == "tcp_connection_closed.v0"
                      and e["object"]["conn"]["server_name"] == "deep.x.alice.test"
                      and e["object"]["conn"]["close_reason"] == "key_no_longer_allows"], 5,
             "the closed connection's event, with close_reason key_no_longer_allows")
    assert t.running(), t.describe()


def test_directory_of_key_files_new_file_picked_up(gateway_factory, keys, upstream, client_ctx):
    # Proves: --authorized-keys may name a directory; every file in it counts, and a file added
    # while the gateway runs is picked up within 2 s.
    gw = gateway_factory(authorized_keys=None, start=False)
    gw.authorized_keys.mkdir()
    (gw.authorized_keys / "alice").write_text(line(keys, "alice", 'permitlisten="*.alice.test:443"'))
    gw.start()
    gw.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    before = gw.tunnel([fwd("app.bob.test", upstream)], key="bob")
    assert before.run_to_exit() == 255, before.describe()

    (gw.authorized_keys / "bob").write_text(line(keys, "bob", 'permitlisten="*.bob.test:443"'))
    t0 = time.monotonic()
    refused_starts = []

    def try_once():
        started = time.monotonic() - t0
        t = attempt(gw, [fwd("app.bob.test", upstream)], key="bob")
        if t.urls():
            return t
        refused_starts.append(started)
        t.close()
        return None

    wait_for(try_once, 15, "bob's key file to be picked up", interval=0.1)
    assert not [s for s in refused_starts if s > 2.0], refused_starts
    assert https_get(gw.tls_port, "app.bob.test", client_ctx).status == 200
    assert https_get(gw.tls_port, "app.alice.test", client_ctx).status == 200


# ---- hostname policy --------------------------------------------------------------------------


def test_normalised_name_conflicts_with_held_name(gateway_factory, keys, upstream_factory, client_ctx):
    # Proves: `APP.ALICE.TEST.` is the same name as app.alice.test: a key allowed it gets the
    # normalised endpoint, and a rival spelling it differently cannot claim it a second time.
    gw = gateway_factory(authorized_keys=(
        line(keys, "alice", 'permitlisten="*.alice.test:443"')
        + line(keys, "dave", 'permitlisten="app.alice.test:443"')))
    first, second = upstream_factory("http", "first"), upstream_factory("http", "second")
    holder = attempt(gw, [fwd("APP.ALICE.TEST.", first)], key="dave")
    assert holder.running() and holder.urls(), holder.describe()
    assert holder.urls()[0].startswith("tls://app.alice.test"), holder.urls()
    assert https_get(gw.tls_port, "app.alice.test", client_ctx).body.startswith("hello from first")
    for key, spelling in [("alice", "App.Alice.Test"), ("alice", "app.alice.test.")]:
        rival = attempt(gw, [fwd(spelling, second)], key=key)
        assert refused(rival, "app.alice.test") or refused(rival, spelling), rival.describe()
        rival.close()
    # The holder's own key, spelled differently, waits for the same name (issue 11) rather than
    # getting a second one.
    rival = gw.tunnel([fwd("APP.ALICE.TEST", second)], key="dave")
    rival.start(wait=False)
    wait_for(lambda: "waiting for app.alice.test" in rival.stderr() or not rival.running(), 20,
             "the waiting notice")
    assert rival.running() and not rival.urls(), rival.describe()
    rival.close()
    assert https_get(gw.tls_port, "app.alice.test", client_ctx).body.startswith("hello from first")
    assert second.accepted == 0


@pytest.mark.parametrize("key,forward_name,port", [
    ("bob", "APP.ALICE.TEST.", 443),      # case + trailing dot don't get round permitlisten
    ("dave", "app.alice.test", 444),      # only port 443 (or 0 / the advertised port)
    ("dave", "*.alice.test", 443),        # a wildcard covering the one allowed name
    ("dave", "x.app.alice.test", 443),    # a name under the allowed one
    ("erin", "192.0.2.7", 443),           # an IP literal, even for a key allowed everything
    ("erin", "[2001:db8::7]", 443),
    ("erin", "app..alice.test", 443),     # an empty label
    ("erin", "*", 443),                   # '*' means a generated name, not every name
    ("erin", "127.0.0.1", 443),           # loopback, as "expose a port" guides write it: generated
], ids=["case-dot", "port-444", "wildcard", "subdomain", "ipv4", "ipv6", "empty-label", "star",
        "loopback"])
def test_bypass_attempts_refused(gateway_factory, keys, upstream, key, forward_name, port):
    # Proves: each spelling that might slip past permitlisten or the hostname rules is refused
    # (or, for '*' and 127.0.0.1, which name no host, gets a generated name under --domain), and
    # nothing routes for app.alice.test.
    gw = gateway_factory(authorized_keys=(
        line(keys, "bob", 'permitlisten="*.bob.test:443"')
        + line(keys, "dave", 'permitlisten="app.alice.test:443"')
        + line(keys, "erin", 'permitlisten="*:*"')))
    t = attempt(gw, [fwd(forward_name, upstream, remote_port=port)], key=key)
    if forward_name in ("*", "127.0.0.1"):
        assert t.urls() and t.urls()[0].split("://")[1].split(".", 1)[1].startswith("localhost"), \
            t.describe()
    else:
        assert not t.urls(), f"{forward_name}:{port} was accepted: {t.urls()}\n{t.describe()}"
        assert t.wait_exit(10) != 0, t.describe()
        assert "remote port forwarding failed" in t.all_output(), t.describe()
    for name in ("app.alice.test", "x.alice.test", "x.app.alice.test"):
        assert is_alert(gw.probe(name), ALERT_UNRECOGNIZED_NAME), name


# ---- claim rules: --pool and --takeover ---------------------------------------------------------


def test_pool_balances_and_survives_one_leaving(gateway, upstream_factory, client_ctx):
    # Proves: two sessions passing --pool share a name, connections go to both (round-robin: each
    # gets a fair share of 20), a plain claim of the pooled name is refused, and when one session
    # leaves the other serves every connection.
    a, b = upstream_factory("http", "A"), upstream_factory("http", "B")
    ta = gateway.tunnel([fwd("app.alice.test", a)], command="tls --pool").start()
    tb = gateway.tunnel([fwd("app.alice.test", b)], command="tls --pool").start()
    hits = collections.Counter()
    for _ in range(20):
        body = https_get(gateway.tls_port, "app.alice.test", client_ctx).body
        hits[body.split()[2]] += 1
    assert set(hits) == {"A", "B"}, hits
    assert min(hits.values()) >= 8, f"round-robin should split 20 connections about evenly: {hits}"

    plain = attempt(gateway, [fwd("app.alice.test", b)], key="alice")
    assert refused(plain, "app.alice.test"), plain.describe()
    plain.close()

    ta.close()
    assert tb.running()
    after = collections.Counter()
    for _ in range(6):
        after[https_get(gateway.tls_port, "app.alice.test", client_ctx).body.split()[2]] += 1
    assert after == {"B": 6}, after
    assert tb.running(), tb.describe()


def test_pool_under_domain_is_not_joined_by_another_key(gateway_factory, keys, upstream_factory,
                                                        client_ctx):
    # Proves: a name a key may take only because it is under --domain (no permitlisten) can be
    # pooled by that key's sessions, but another such key's --pool is refused with the reason:
    # it can't take a share of someone else's connections.
    gw = gateway_factory(authorized_keys=line(keys, "carol") + line(keys, "dave"))
    a, b = upstream_factory("http", "A"), upstream_factory("http", "B")
    gw.tunnel([fwd("demo.localhost", a)], key="carol", command="tls --pool").start()
    gw.tunnel([fwd("demo.localhost", a)], key="carol", command="tls --pool").start()
    other = attempt(gw, [fwd("demo.localhost", b)], key="dave", command="tls --pool")
    wait_refused(other, "demo.localhost")
    assert "pooled by another key" in other.all_output(), other.describe()
    for _ in range(6):
        assert https_get(gw.tls_port, "demo.localhost", client_ctx).body.startswith("hello from A")


def test_takeover_same_key_moves_name_and_tells_old(gateway_factory, upstream_factory, client_ctx):
    # Proves: a newer session of the same key with --takeover gets the name (new connections reach
    # it), the old session is told and, having nothing left, ends (events: taken_over).
    gateway = gateway_factory(args=["--event-log", "events.jsonl"])
    old_up, new_up = upstream_factory("http", "old"), upstream_factory("http", "new")
    old = gateway.tunnel([fwd("app.alice.test", old_up)], key="alice").start()
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).body.startswith("hello from old")
    new = gateway.tunnel([fwd("app.alice.test", new_up)], key="alice", command="tls --takeover").start()
    wait_for(lambda: "was taken over by a newer session of your key (--takeover)" in old.stderr(),
             10, "the old session to be told")
    assert "tls://app.alice.test" in old.stderr()
    old.wait_exit(10)
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).body.startswith("hello from new")
    assert new.running(), new.describe()
    assert deleted_reasons(gateway) == {"app.alice.test": "taken_over"}
    assert ended_reason(gateway, "alice") == "taken_over"


def test_takeover_refused_for_another_key(gateway_factory, keys, upstream_factory, client_ctx):
    # Proves: --takeover by a different key (even one allowed the name) is refused, the holder keeps
    # serving and is not told anything, and the refused user is told the name is "held by another key".
    gw = gateway_factory(authorized_keys=(
        line(keys, "alice", 'permitlisten="*.alice.test:443"')
        + line(keys, "dave", 'permitlisten="app.alice.test:443"')))
    first, second = upstream_factory("http", "first"), upstream_factory("http", "second")
    holder = gw.tunnel([fwd("app.alice.test", first)], key="alice").start()
    strict = attempt(gw, [fwd("app.alice.test", second)], key="dave", command="tls --takeover")
    assert refused(strict, "app.alice.test"), strict.describe()
    strict.close()
    rival = attempt(gw, [fwd("app.alice.test", second)], key="dave", command="tls --takeover",
                    exit_on_forward_failure=False)
    wait_for(lambda: "app.alice.test" in rival.stderr() or not rival.running(), 20,
             "the takeover refusal")
    assert not rival.urls(), rival.describe()
    assert holder.running() and "taken over" not in holder.stderr(), holder.describe()
    for _ in range(3):
        assert https_get(gw.tls_port, "app.alice.test", client_ctx).body.startswith("hello from first")
    assert second.accepted == 0
    refusal = [ln for ln in rival.stderr().splitlines() if "app.alice.test" in ln]
    assert any("held by another key" in ln for ln in refusal), \
        f"the refusal should say the name is held by another key: {refusal}"


# ---- limits -----------------------------------------------------------------------------------


def test_endpoints_per_key_limit_is_50(gateway, upstream):
    # Proves: one key may hold 50 endpoints; the 51st forward is refused with a message, and the
    # first 50 route.
    names = [f"n{i:02d}.alice.test" for i in range(51)]
    t = gateway.tunnel([fwd(n, upstream) for n in names], key="alice", exit_on_forward_failure=False)
    t.start(wait=False)
    wait_for(lambda: len(t.urls()) >= 50 or not t.running(), 30, "50 banner URLs")
    wait_for(lambda: "n50.alice.test" in t.stderr() or not t.running(), 10,
             "a refusal naming the 51st name")
    assert len(t.urls()) == 50, t.urls()
    assert "tls://n50.alice.test" not in t.urls()
    assert "n50.alice.test" in t.stderr(), t.describe()
    assert is_alert(gateway.probe("n50.alice.test"), ALERT_UNRECOGNIZED_NAME)
    for n in (names[0], names[25], names[49]):
        assert gateway.routed(n), n


# ---- from=, per-endpoint CIDR rules, `snigate keys` -------------------------------------------


@pytest.mark.parametrize("pattern,allowed", [
    ("10.0.0.0/8", False),
    ("192.0.2.*", False),
    ("!127.0.0.1,*", False),
    ("127.0.0.0/8", True),
    ("10.0.0.0/8,127.0.0.1", True),
])
def test_from_option_restricts_source(gateway_factory, keys, upstream, pattern, allowed):
    # Proves: from="pattern-list" refuses authentication from a source it does not match (CIDR,
    # wildcard, negation) and accepts one it does (our ssh client connects from 127.0.0.1).
    gw = gateway_factory(authorized_keys=line(
        keys, "alice", f'from="{pattern}",permitlisten="*.alice.test:443"'))
    t = attempt(gw, [fwd("app.alice.test", upstream)], key="alice")
    if allowed:
        assert t.running() and t.urls(), t.describe()
        gw.wait_routed("app.alice.test", 5)
    else:
        assert t.wait_exit(10) == 255, t.describe()
        assert "Permission denied" in t.all_output(), t.describe()
        assert is_alert(gw.probe("app.alice.test"), ALERT_UNRECOGNIZED_NAME)


def test_from_narrowed_while_running_closes_session(gateway_factory, keys, upstream):
    # Proves: when a key's from= stops matching a live session's address (edited while it runs),
    # the session is closed with a message saying why, and its endpoint goes away.
    gw = gateway_factory(authorized_keys=line(keys, "alice", 'permitlisten="*.alice.test:443"'))
    t = gw.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    gw.authorized_keys.write_text(line(
        keys, "alice", 'from="10.0.0.0/8",permitlisten="*.alice.test:443"'))
    assert t.wait_exit(10) == 1, t.describe()
    assert "from= in authorized_keys no longer allows 127.0.0.1" in t.stderr(), t.describe()
    gw.wait_unrouted("app.alice.test", 5)


@pytest.mark.parametrize("options,admitted", [
    ("--allow-cidr 10.0.0.0/8", False),
    ("--deny-cidr 127.0.0.1", False),
    ("--allow-cidr 127.0.0.0/8 --deny-cidr 127.0.0.1/32", False),
    ("--allow-cidr 127.0.0.0/8", True),
    ("--deny-cidr 10.0.0.0/8", True),
    ("--deny-cidr ::/0", False),  # ::/0 is every client, IPv4 ones included
    ("--allow-cidr ::1/128 --allow-cidr 127.0.0.1", True),
])
def test_cidr_rules_close_refused_clients_before_any_channel(gateway_factory, upstream_factory,
                                                             client_ctx, options, admitted):
    # Proves: tls --allow-cidr/--deny-cidr decide who reaches the endpoint; a refused client is
    # closed without an answer and the upstream never sees a connection (no channel was opened),
    # the user is told, and the refusal is an event with refusal_reason cidr_denied.
    gw = gateway_factory(args=["--event-log", "events.jsonl"])
    up = upstream_factory("http", "up")
    t = gw.tunnel([fwd("app.alice.test", up)], command=f"tls {options}").start()
    if admitted:
        assert https_get(gw.tls_port, "app.alice.test", client_ctx).status == 200
        assert up.accepted == 1
        return
    r = raw_exchange(gw.tls_port, [client_hello("app.alice.test")], read_timeout=5)
    assert r.closed and r.data == b"", r
    told = "snigate: connection from 127.0.0.1 refused"
    wait_for(lambda: told in t.stdout() + t.stderr(), 5, "the user to be told of the refused client")
    ev = wait_for(lambda: [e for e in read_events(gw.dir / "events.jsonl")
                           if e["event_type"] == "tcp_connection_closed.v0"], 5, "the event")
    assert ev[-1]["object"]["conn"]["refusal_reason"] == "cidr_denied", ev[-1]
    assert ev[-1]["object"]["conn"]["server_name"] == "app.alice.test"
    assert up.accepted == 0, "the upstream saw a connection from a refused client"
    assert t.running()


def test_keys_command_round_trip_while_running(gateway, keys, upstream, client_ctx):
    # Proves: `snigate keys add` (to the file the running gateway reads) lets a new key forward the
    # allowed name within 2 s, `keys list --json` shows it, and `keys remove` closes its session.
    ak = str(gateway.authorized_keys)
    pub = str(keys.path("dave")) + ".pub"
    before = gateway.authorized_keys.read_text()
    add = subprocess.run([SNIGATE_BIN, "keys", "add", "--name", "dave", "--allow", "app.bob.test",
                          "--file", ak, pub], capture_output=True, text=True, timeout=30,
                         env=clean_env())
    assert add.returncode == 0, add.stderr
    text = gateway.authorized_keys.read_text()
    assert text.startswith(before), "keys add must keep the existing lines (and comments)"
    t0 = time.monotonic()

    def try_once():
        t = attempt(gateway, [fwd("app.bob.test", upstream)], key="dave")
        if t.urls():
            return t
        t.close()
        return None

    t = wait_for(try_once, 15, "dave's key to be accepted after keys add", interval=0.1)
    assert time.monotonic() - t0 < 5.0, "keys add took effect later than 2 s (+ one ssh attempt)"
    assert https_get(gateway.tls_port, "app.bob.test", client_ctx).status == 200

    listed = subprocess.run([SNIGATE_BIN, "keys", "list", "--json", "--file", ak],
                            capture_output=True, text=True, timeout=30, env=clean_env())
    assert listed.returncode == 0, listed.stderr
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert set(entries) >= {"alice", "bob", "carol", "dave"}, entries
    assert entries["dave"]["allow"] == ["app.bob.test:443"]
    assert entries["dave"]["fingerprint"].startswith("SHA256:")
    assert entries["dave"]["fingerprint"] in t.log(), "fingerprint differs from ssh's own"

    rm = subprocess.run([SNIGATE_BIN, "keys", "remove", "--file", ak, "dave"],
                        capture_output=True, text=True, timeout=30, env=clean_env())
    assert rm.returncode == 0, rm.stderr
    assert gateway.authorized_keys.read_text() == before
    assert t.wait_exit(10) == 1, t.describe()
    assert REVOKED_MSG in t.stderr()
    gateway.wait_unrouted("app.bob.test", 5)


def test_sessions_per_key_limit_is_20(gateway, upstream_factory):
    # Proves: one key may hold 20 sessions; the 21st is told why and ends with status 1, its
    # endpoint never routes, and after one of the 20 leaves a new session is accepted again.
    up = upstream_factory("http", "up")
    sessions = [gateway.tunnel([fwd(f"s{i:02d}.alice.test", up)], key="alice").start(wait=False)
                for i in range(20)]
    for t in sessions:
        t.wait_ready(timeout=60)
    extra = gateway.tunnel([fwd("s20.alice.test", up)], key="alice")
    rc = extra.run_to_exit()
    assert rc == 1, extra.describe()
    assert "this key already has 20 sessions open" in extra.stderr(), extra.describe()
    assert is_alert(gateway.probe("s20.alice.test"), ALERT_UNRECOGNIZED_NAME)
    other = gateway.tunnel([fwd("app.bob.test", up)], key="bob").start()  # other keys unaffected
    assert other.running()
    sessions[0].close()
    gateway.wait_unrouted("s00.alice.test", 10)
    again = gateway.tunnel([fwd("s21.alice.test", up)], key="alice").start()
    assert again.running() and gateway.routed("s21.alice.test")


def keys_cmd(*args, env=None, stdin=None):
    """`snigate keys ARGS...` with the clean environment plus `env`."""
    return subprocess.run([SNIGATE_BIN, "keys", *args], capture_output=True, text=True,
                          timeout=30, env={**clean_env(), **(env or {})}, input=stdin)


def test_keys_edit_keeps_live_session_serving(gateway_factory, keys, upstream, client_ctx):
    # Proves: `snigate keys edit` changes a live key's options (name, allow, from, expiry) in the
    # file the gateway reads; after the reload the key's session is still up and still serves its
    # name, since its key blob is unchanged and the name still fits. A later edit that no longer
    # allows the name takes just that endpoint down.
    gw = gateway_factory(authorized_keys=line(keys, "alice", 'permitlisten="*.alice.test:443"'))
    t = gw.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    assert https_get(gw.tls_port, "app.alice.test", client_ctx).status == 200
    reloads = gw.log_text().count("keys.reload ")
    r = keys_cmd("edit", "--name", "alice-laptop", "--allow", "app.alice.test", "--allow",
                 "*.x.alice.test", "--from", "127.0.0.0/8", "--expires", "2099-12-31", "alice",
                 env={"SNIGATE_AUTHORIZED_KEYS": str(gw.authorized_keys)})
    assert r.returncode == 0, r.stderr
    assert "edited SHA256:" in r.stdout and "alice-laptop" in r.stdout, r.stdout
    text = gw.authorized_keys.read_text()
    assert 'expiry-time="20991231235959"' in text and text.rstrip().endswith(" alice-laptop"), text
    wait_for(lambda: gw.log_text().count("keys.reload ") > reloads, 10, "the gateway's reload")
    for _ in range(3):
        assert https_get(gw.tls_port, "app.alice.test", client_ctx).status == 200
    assert t.running(), t.describe()
    assert REVOKED_MSG not in t.stderr()

    r = keys_cmd("edit", "--allow", "other.alice.test", "alice-laptop",
                 env={"SNIGATE_AUTHORIZED_KEYS": str(gw.authorized_keys)})
    assert r.returncode == 0, r.stderr
    gw.wait_unrouted("app.alice.test", 10)
    assert t.running(), "narrowing the names removes endpoints, not the session"


def test_keys_add_reads_process_substitution_and_state_dir_from_environment(tmp_path, keys):
    # Proves: `keys add <(cat k.pub)` reads the /dev/fd pipe bash gives it, and every verb finds
    # the keys through serve's settings: SNIGATE_STATE_DIR here (as in the container image),
    # never a hard-coded ./snigate-data in the working directory.
    state = tmp_path / "data"
    pub = str(keys.path("dave")) + ".pub"
    env = {**clean_env(), "SNIGATE_STATE_DIR": str(state)}
    add = subprocess.run(["bash", "-c", f'"$0" keys add --name dave --allow "*.dave.test" <(cat "$1")',
                          SNIGATE_BIN, pub], capture_output=True, text=True, timeout=30, env=env,
                         cwd=tmp_path)
    assert add.returncode == 0, add.stderr
    assert f"to {state}/authorized_keys" in add.stdout, add.stdout
    assert not (tmp_path / "snigate-data").exists()
    listed = keys_cmd("list", "--json", env={"SNIGATE_STATE_DIR": str(state)})
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == ["dave"]
    toml = tmp_path / "gw.toml"
    toml.write_text(f'state_dir = "{state}"\n')
    listed = keys_cmd("list", "--config", str(toml))
    assert "dave" in listed.stdout, listed.stdout + listed.stderr


@pytest.mark.parametrize("pattern,why", [
    ("foo..bar.com", "empty label"),
    ("10.0.0.1", "IP addresses are not hostnames"),
    ("*.", "no trailing dot"),
    ("!evil.com", "only negations"),
    ("app.example.com:80", "port 80 never matches"),
])
def test_keys_add_refuses_allow_patterns_that_never_match(tmp_path, keys, pattern, why):
    # Proves: an --allow no requested name can match is refused with one line and exit 1, and the
    # file is not written; a bare '*' is accepted with a warning.
    ak = tmp_path / "ak"
    r = keys_cmd("add", "--allow", pattern, "--file", str(ak), str(keys.path("dave")) + ".pub")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and why in r.stderr, r.stderr
    assert not ak.exists()
    r = keys_cmd("add", "--allow", "*", "--file", str(ak), str(keys.path("dave")) + ".pub")
    assert r.returncode == 0 and "warning: --allow *" in r.stderr, r.stderr


# ---- no key may shadow another's names (issue 16 item 4) --------------------------------------

SHADOW_NAMES = ["*.zone.localhost", "*.deep.zone.localhost", "*.x.localhost", "*.alice.localhost"]


def _refused_with(gw, name, upstream, key, text):
    """`key`'s `tls` session asking for `name` is told `text` and announces nothing."""
    t = attempt(gw, [fwd(name, upstream)], key=key, exit_on_forward_failure=False)
    wait_for(lambda: text in t.stderr() or not t.running(), 20, f"the refusal: {text}")
    assert text in t.stderr() and not t.urls(), t.describe()
    t.close()


def _shadow_gateway(gateway_factory, keys):
    """--domain localhost; alice is given *.alice.localhost explicitly, carol and dave only have
    the --domain default."""
    return gateway_factory(authorized_keys=(
        line(keys, "alice", 'permitlisten="*.alice.localhost:443"')
        + line(keys, "carol") + line(keys, "dave")))


@pytest.mark.parametrize("name", ["app.alice.localhost", "*.deep.alice.localhost",
                                  "*.alice.localhost"])
def test_names_given_to_a_key_are_not_under_the_domain_default(gateway_factory, keys, upstream,
                                                               name):
    # Proves: a name (or any name a wildcard covers) that authorized_keys gives alice with
    # permitlisten can't be taken by another key through the --domain default, even while alice
    # is away: the forward is refused, saying why, and the name does not route.
    gw = _shadow_gateway(gateway_factory, keys)
    _refused_with(gw, name, upstream, "carol", "another key (permitlisten)")
    probe_name = name.replace("*", "x")
    assert is_alert(gw.probe(probe_name), ALERT_UNRECOGNIZED_NAME)


@pytest.mark.parametrize("name", ["app.zone.localhost", "*.deep.zone.localhost"])
def test_no_other_key_under_a_live_wildcard(gateway_factory, keys, upstream_factory, client_ctx,
                                            name):
    # Proves: while carol holds *.zone.localhost, dave can claim neither a name nor a narrower
    # wildcard under it (routing prefers them, so they would take carol's visitors): refused at
    # forward time with the reason, and carol keeps every name.
    gw = _shadow_gateway(gateway_factory, keys)
    ours = upstream_factory("http", "carol", names=SHADOW_NAMES)
    theirs = upstream_factory("http", "dave", names=SHADOW_NAMES)
    carol = gw.tunnel([fwd("*.zone.localhost", ours)], key="carol").start()
    _refused_with(gw, name, theirs, "dave", "is under *.zone.localhost")
    probe_name = name.replace("*", "x")
    assert https_get(gw.tls_port, probe_name, client_ctx).body.startswith("hello from carol")
    assert carol.running() and theirs.accepted == 0


def test_no_wildcard_over_another_keys_live_name(gateway_factory, keys, upstream_factory,
                                                 client_ctx):
    # Proves the other order: while dave holds app.x.localhost, carol's *.x.localhost (which would
    # cover it) is refused, so neither key's names nest; dave keeps his name. A key may nest its
    # own names (alice: *.alice.localhost and app.alice.localhost in one session).
    gw = _shadow_gateway(gateway_factory, keys)
    d, c = upstream_factory("http", "dave", names=SHADOW_NAMES), upstream_factory("http", "carol", names=SHADOW_NAMES)
    gw.tunnel([fwd("app.x.localhost", d)], key="dave").start()
    _refused_with(gw, "*.x.localhost", c, "carol", "would cover app.x.localhost")
    assert https_get(gw.tls_port, "app.x.localhost", client_ctx).body.startswith("hello from dave")
    own = gw.tunnel([fwd("*.alice.localhost", c), fwd("app.alice.localhost", d)], key="alice")
    own.start()
    assert https_get(gw.tls_port, "app.alice.localhost", client_ctx).body.startswith("hello from dave")
    assert https_get(gw.tls_port, "w.alice.localhost", client_ctx).body.startswith("hello from carol")

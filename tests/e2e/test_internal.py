"""Internal endpoints (issue 13 part 1): `-R NAME.internal:443:...` or `tls --internal` publishes
an endpoint the public TLS port does not route; teammates reach it with the real `ssh -L` and
`ssh -W` (as a ProxyCommand would run it), authorized by permitopen in authorized_keys; every
refusal is told to the ssh client; pools, CIDR rules, limits, events and the API cover them."""

import hashlib
import json
import socket
import subprocess

import pytest

from conftest import (ALERT_INTERNAL_ERROR, ALERT_UNRECOGNIZED_NAME, READY_TIMEOUT, REPO,
                      SNIGATE_BIN, UPSTREAM_NAMES, MemTls, bulk_exchange, clean_env, client_hello,
                      free_closed_port, fwd, https_get, is_alert, metric, parse_prometheus,
                      raw_exchange, read_events, run, source_stream, wait_for)

INTERNAL_NAMES = (*UPSTREAM_NAMES, "app.internal", "db.team.internal", "gone.internal")


def authorized_keys(keys) -> str:
    # alice publishes (her permitlisten includes .internal names); bob may reach app.internal
    # only; carol has no options (her own internal endpoints only); mallory is restricted (her
    # permitopen does not undo it, as in OpenSSH); dave has restrict,port-forwarding (re-enabled)
    # and may reach any .internal name.
    return (
        f'permitlisten="*.alice.test:443",permitlisten="*.internal:443" {keys.pub("alice")}\n'
        f'permitopen="app.internal:443" {keys.pub("bob")}\n'
        f"{keys.pub('carol')}\n"
        f'restrict,permitopen="app.internal:443" {keys.pub("mallory")}\n'
        f'restrict,port-forwarding,permitopen="*.internal:443" {keys.pub("dave")}\n'
    )


@pytest.fixture
def gw(gateway_factory, keys, tmp_path):
    g = gateway_factory(authorized_keys(keys), admin_listen="127.0.0.1:0",
                        args=["--event-log", str(tmp_path / "events.jsonl")])
    g.events_path = tmp_path / "events.jsonl"
    return g


def local_forward(gw, key: str, target: str, shell: bool = False):
    """The real `ssh -L 127.0.0.1:PORT:TARGET` (with -N, or a shell session to see messages);
    returns (tunnel, port) once the local port listens."""
    port = free_closed_port()
    t = gw.tunnel([], key=key, command="" if shell else None,
                  extra=["-L", f"127.0.0.1:{port}:{target}"]).start(wait=False)

    def listening():
        # From ssh's own -vvv log: a probe connection would be a real connection (and event).
        if not t.running():
            pytest.fail(f"ssh -L exited {t.proc.returncode}:\n{t.describe()}")
        return f"Local forwarding listening on 127.0.0.1 port {port}" in t.log()

    wait_for(listening, READY_TIMEOUT, f"ssh -L listening on {port}")
    return t, port


def stdio_forward(gw, key: str, target: str):
    """`ssh -W TARGET` with its stdin/stdout on one end of a socket pair, as a ProxyCommand is run;
    returns (process, our end, stderr path)."""
    base = gw.tunnel([], key=key, command=None)
    args = [a for a in base.args if a != "-N"]
    args[-1:-1] = ["-W", target]
    ours, theirs = socket.socketpair()
    err = base.stderr_path
    with open(err, "wb") as e:
        proc = subprocess.Popen(args, stdin=theirs, stdout=theirs, stderr=e, env=clean_env(),
                                start_new_session=True)
    theirs.close()
    base.proc = proc  # closed with the gateway's tunnels
    return proc, ours, base


def publish(gw, upstream, name="app.internal", command="tls", key="alice"):
    t = gw.tunnel([fwd(name, upstream)], key=key, command=command).start()
    return t


def gateway_says(gw, text: str):
    wait_for(lambda: text in gw.log_text(), READY_TIMEOUT, f"gateway log line {text!r}")


def test_ssh_L_reaches_internal_endpoint(gw, upstream_factory, client_ctx):
    # Proves: `-R app.internal:443` registers an internal endpoint (banner says so, the URL has no
    # TLS port); a teammate allowed by permitopen reaches it with `ssh -N -L`, the certificate is
    # the owner's upstream's (passthrough); the event names the binding and the teammate's session;
    # the API shows binding "internal".
    up = upstream_factory("http", "owner", names=INTERNAL_NAMES)
    owner = publish(gw, up)
    assert owner.urls() == ["tls://app.internal"], owner.stdout()
    assert "app.internal is internal: not on the public port" in owner.stdout(), owner.stdout()
    mate, port = local_forward(gw, "bob", "app.internal:443")
    answer = https_get(port, "app.internal", client_ctx)
    assert answer.status == 200 and answer.body == "hello from owner sni=app.internal\n"
    assert "app.internal" in answer.peer_cert_san

    def closed():
        return [e for e in read_events(gw.events_path)
                if e["event_type"] == "tcp_connection_closed.v0"
                and e["object"]["conn"]["server_name"] == "app.internal"
                and e["object"]["conn"]["refusal_reason"] is None]
    wait_for(closed, READY_TIMEOUT, "the internal connection's event")
    ev = closed()[-1]["object"]
    assert ev["conn"]["binding"] == "internal", ev
    assert ev["conn"]["close_reason"] == "closed", ev
    assert ev["conn"]["client_session"]["key_fingerprint"].startswith("SHA256:"), ev
    assert ev["conn"]["client_session"]["id"] != ev["session"]["id"], ev
    assert ev["conn"]["bytes_in"] > 0 and ev["conn"]["bytes_out"] > 0, ev
    assert ev["endpoint"]["url"] == "tls://app.internal", ev
    assert len(closed()) == 1, f"one event per connection: {closed()}"
    eps = gw.admin("GET", "/api/endpoints").json()["endpoints"]
    assert [e["binding"] for e in eps] == ["internal"], eps
    created = [e for e in read_events(gw.events_path) if e["event_type"] == "endpoint_created.v0"]
    assert created[-1]["object"]["binding"] == "internal", created
    assert mate.running(), "a session without -R stays open for its -L"


def test_public_port_does_not_route_internal_names(gw, upstream_factory, client_ctx):
    # Proves: the public port answers an internal name like an unknown one (alert 112), with its
    # own refusal reason in the event and the metric; `tls --internal` makes any name internal,
    # and its own key reaches it without permitopen.
    up = upstream_factory("http", "owner", names=INTERNAL_NAMES)
    publish(gw, up)
    publish(gw, up, name="app.alice.test", command="tls --internal")
    for name in ("app.internal", "app.alice.test"):
        r = raw_exchange(gw.tls_port, [client_hello(name)])
        assert is_alert(r.data, ALERT_UNRECOGNIZED_NAME), (name, r.data)
    def refused():
        return [e["object"]["conn"] for e in read_events(gw.events_path)
                if e["event_type"] == "tcp_connection_closed.v0"]
    wait_for(lambda: len(refused()) >= 2, READY_TIMEOUT, "the two refusals' events")
    refused = refused()
    assert [c["refusal_reason"] for c in refused] == ["internal_endpoint"] * 2, refused
    assert all(c["binding"] == "public" for c in refused), refused
    samples = parse_prometheus(gw.admin("GET", "/metrics").body.decode())
    assert metric(samples, "snigate_connections_refused_total", reason="internal_endpoint") == 2
    _, port = local_forward(gw, "alice", "app.alice.test:443")
    assert https_get(port, "app.alice.test", client_ctx).body == "hello from owner sni=app.alice.test\n"


def test_ssh_W_as_proxycommand_bulk_byte_exact(gw, upstream_factory, client_ctx):
    # Proves: `ssh -W app.internal:443 gw` on a ProxyCommand's stdin/stdout carries the same
    # passthrough TLS (the upstream's certificate verifies), and 8 MiB each way arrive intact.
    up = upstream_factory("echo", "owner", names=INTERNAL_NAMES)
    publish(gw, up)
    proc, sock, ssh = stdio_forward(gw, "dave", "app.internal:443")
    conn = MemTls(_NoNodelay(sock), client_ctx, server_hostname="app.internal", timeout=120)
    conn.handshake()
    total = 8 << 20
    payload = b"".join(source_stream(total))
    want = hashlib.sha256(payload).hexdigest()
    assert bulk_exchange(conn, payload, total) == want
    conn.shutdown_write()
    conn.read_until_eof()
    wait_for(lambda: up.results, READY_TIMEOUT, "the upstream's record")
    assert up.results[-1] == {"bytes": total, "sha256": want}, up.results
    conn.close()
    assert proc.wait(READY_TIMEOUT) == 0, ssh.describe()


class _NoNodelay:
    """MemTls sets TCP_NODELAY, which a Unix socket pair has not: ignore just that."""

    def __init__(self, sock):
        self._s = sock

    def setsockopt(self, *a):
        try:
            self._s.setsockopt(*a)
        except OSError:
            pass

    def __getattr__(self, name):
        return getattr(self._s, name)


REFUSALS = [
    # (label, key, target, reason in the gateway log, text the user is shown)
    ("no permitopen for it", "bob", "db.team.internal:443", "not_permitted",
     "this key's permitopen allows only app.internal:443"),
    ("another key's name", "carol", "app.internal:443", "other_key",
     "app.internal is another key's internal endpoint"),
    ("a public-only name", "carol", "app.alice.test:443", "public_only",
     "app.alice.test is a public endpoint, not an internal one"),
    ("a name that does not exist", "dave", "gone.internal:443", "no_endpoint",
     "no internal endpoint serves gone.internal"),
    ("restrict", "mallory", "app.internal:443", "restricted",
     "this key may not open connections through the gateway"),
]


@pytest.mark.parametrize("label,key,target,reason,says", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_ssh_L_refusals_are_explained(gw, upstream_factory, label, key, target, reason, says):
    # Proves: each refusal refuses the channel open (the local client gets nothing; ssh prints
    # "open failed: administratively prohibited") and the ssh client's terminal shows why.
    up = upstream_factory("http", "owner", names=INTERNAL_NAMES)
    publish(gw, up)
    publish(gw, up, name="app.alice.test")
    mate, port = local_forward(gw, key, target, shell=True)
    r = raw_exchange(port, [client_hello(target.split(":")[0])])
    assert r.data == b"" and r.closed, f"a refused open sends nothing: {r}"
    wait_for(lambda: f"snigate: cannot open {target}: " in mate.stderr(), READY_TIMEOUT,
             "the refusal on the ssh client's stderr")
    assert says in mate.stderr(), mate.describe()
    assert "open failed: administratively prohibited" in mate.all_output(), mate.describe()
    gateway_says(gw, f"reason={reason} ")
    samples = parse_prometheus(gw.admin("GET", "/metrics").body.decode())
    assert metric(samples, "snigate_direct_refused_total") >= 1
    assert mate.running(), "one refused -L does not end the session"
    assert up.accepted == 0, "nothing reached the upstream"


@pytest.mark.parametrize("label,key,target,reason,says", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_ssh_W_refusals_are_explained(gw, upstream_factory, label, key, target, reason, says):
    # Proves: a refused `ssh -W` exits 255 and prints the reason (OpenSSH prints a disconnect's
    # reason; libssh 0.10 can't put one in an open failure).
    up = upstream_factory("http", "owner", names=INTERNAL_NAMES)
    publish(gw, up)
    publish(gw, up, name="app.alice.test")
    proc, sock, ssh = stdio_forward(gw, key, target)
    assert proc.wait(READY_TIMEOUT) == 255
    text = ssh.all_output()
    assert f"snigate: cannot open {target}: " in text and says in text, text
    sock.close()
    gateway_says(gw, f"reason={reason} ")


def test_cidr_rules_limit_and_pool_cover_internal(gateway_factory, keys, upstream_factory,
                                                  client_ctx, tmp_path):
    # Proves: the owner's --deny-cidr applies to the teammate's SSH address (closed, event
    # cidr_denied, binding internal); the per-endpoint connection limit applies (alert 80 through
    # the -L); two `tls --internal --pool` sessions share the name.
    events = tmp_path / "events.jsonl"
    gw = gateway_factory(authorized_keys(keys),
                         args=["--event-log", str(events), "--max-connections-per-endpoint", "1"])
    silent = upstream_factory("silent", "silent", names=INTERNAL_NAMES)
    gw.tunnel([fwd("app.internal", silent)], command="tls --deny-cidr 127.0.0.1").start()
    _, port = local_forward(gw, "bob", "app.internal:443")
    r = raw_exchange(port, [client_hello("app.internal")])
    assert r.data == b"" and r.closed, r
    wait_for(lambda: [e for e in read_events(events)
                      if e["object"].get("conn", {}).get("refusal_reason") == "cidr_denied"],
             READY_TIMEOUT, "the cidr_denied event")
    denied = [e["object"]["conn"] for e in read_events(events)
              if e["object"].get("conn", {}).get("refusal_reason") == "cidr_denied"]
    assert denied[-1]["binding"] == "internal", denied

    a = upstream_factory("http", "pool-a", names=INTERNAL_NAMES)
    b = upstream_factory("http", "pool-b", names=INTERNAL_NAMES)
    gw.tunnel([fwd("db.team.internal", a)], command="tls --internal --pool").start()
    gw.tunnel([fwd("db.team.internal", b)], command="tls --internal --pool").start()
    _, dport = local_forward(gw, "dave", "db.team.internal:443")
    seen = set()
    for i in range(4):
        seen.add(https_get(dport, "db.team.internal", client_ctx).body.split()[2])
        # The client has its answer before the owner's leg has closed: with a limit of 1, the
        # next request waits for that close (its event), or it could find the member full.
        wait_for(lambda: len([e for e in read_events(events)
                              if e["object"].get("conn", {}).get("server_name")
                              == "db.team.internal"]) > i,
                 READY_TIMEOUT, f"request {i}'s tcp_connection_closed")
    assert seen == {"pool-a", "pool-b"}, seen

    held = MemTls.connect(dport, client_ctx, server_hostname="db.team.internal")
    held.handshake()  # one open connection on one member: the pool's other member is free
    gw.tunnel([fwd("app.alice.test", silent)], command="tls --internal").start()
    _, aport = local_forward(gw, "alice", "app.alice.test:443")
    first = MemTls.connect(aport, client_ctx, server_hostname="app.alice.test")
    first.handshake()
    r = raw_exchange(aport, [client_hello("app.alice.test")])
    assert is_alert(r.data, ALERT_INTERNAL_ERROR), r.data
    first.close()
    held.close()


def test_events_doc_names_the_new_fields():
    # Proves: docs/events.md documents the binding and the teammate's session.
    doc = (REPO / "docs" / "events.md").read_text()
    for field in ("object.conn.binding", "object.conn.client_session.id",
                  "object.conn.client_session.key_fingerprint", "internal_endpoint"):
        assert field in doc, field


def test_takeover_moves_internal_name_and_keys_list_shows_permitopen(gw, upstream_factory,
                                                                    client_ctx):
    # Proves: `tls --takeover` moves an internal name to the newer session of the same key (the
    # teammate's next connection reaches the new upstream), and `snigate keys list` shows each
    # key's permitopen entries.
    old = upstream_factory("http", "old", names=INTERNAL_NAMES)
    new = upstream_factory("http", "new", names=INTERNAL_NAMES)
    first = publish(gw, old)
    _, port = local_forward(gw, "bob", "app.internal:443")
    assert https_get(port, "app.internal", client_ctx).body.split()[2] == "old"
    publish(gw, new, command="tls --takeover")
    wait_for(lambda: "was taken over by a newer session of your key" in first.stderr(),
             READY_TIMEOUT, "the old session told of the takeover")
    assert https_get(port, "app.internal", client_ctx).body.split()[2] == "new"
    listed = run([SNIGATE_BIN, "keys", "list", "--file", str(gw.authorized_keys)]).stdout.decode()
    bob = next(line for line in listed.splitlines() if "  bob  " in line)
    assert "open=app.internal:443" in bob, listed
    listed_json = json.loads(run([SNIGATE_BIN, "keys", "list", "--json", "--file",
                                  str(gw.authorized_keys)]).stdout.decode())
    assert {k["name"]: k["open"] for k in listed_json}["dave"] == ["*.internal:443"], listed_json


def test_generated_internal_name_and_verbose_owner_line(gw, upstream_factory, client_ctx):
    # Proves: `-R 443:... tls --internal` gets a generated name that is internal (the public port
    # refuses it), its own key reaches it through `ssh -L`, and the owner's --verbose line names
    # the connection like a public one.
    up = upstream_factory("http", "gen", names=INTERNAL_NAMES)
    owner = gw.tunnel([fwd("", up)], command="tls --internal --verbose").start()
    (url,) = owner.urls()
    name = url.removeprefix("tls://")
    assert name.endswith(".localhost") and ":" not in name, url
    up.add_names(name)
    r = raw_exchange(gw.tls_port, [client_hello(name)])
    assert is_alert(r.data, ALERT_UNRECOGNIZED_NAME), r.data
    _, port = local_forward(gw, "alice", f"{name}:443")
    assert https_get(port, name, client_ctx).body == f"hello from gen sni={name}\n"
    wait_for(lambda: f" {name} " in owner.stdout() and " closed" in owner.stdout(), READY_TIMEOUT,
             "the owner's --verbose line")

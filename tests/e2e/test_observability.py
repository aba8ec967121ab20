"""Observability: the JSON event log, the admin HTTP API, Prometheus /metrics and what the user sees
in their own ssh session (DESIGN section 6, issue 5, docs/events.md, docs/api.md)."""

import base64
import hashlib
import os
import re
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import (ALERT_DECODE_ERROR, ALERT_INTERNAL_ERROR, ALERT_UNRECOGNIZED_NAME,
                      START_TIMEOUT, MemTls, client_hello, clean_env, free_closed_port, fwd,
                      https_get_raw,
                      is_alert, metric, parse_prometheus, read_events, tail, wait_for)

EVENTS = "events.jsonl"  # relative: snigate runs in the gateway's own directory
TOKEN = "e2e-admin-token-0123456789"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
EVENT_ID_RE = re.compile(r"^ev_[0-9a-f]{8}[0-9a-f]{12}$")


def fingerprint(pub_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line."""
    blob = base64.b64decode(pub_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def events(gw, event_type: str | None = None) -> list[dict]:
    evs = read_events(gw.dir / EVENTS)
    return [e for e in evs if event_type is None or e["event_type"] == event_type]


def conn_event(gw, client_port: int, timeout: float = 10.0) -> dict:
    """The tcp_connection_closed.v0 event of the connection from 127.0.0.1:client_port."""
    def find():
        for e in events(gw, "tcp_connection_closed.v0"):
            if e["object"]["conn"]["client_port"] == client_port:
                return e
        return None
    return wait_for(find, timeout, f"the tcp_connection_closed event of client port {client_port}")


def raw_conn(port: int, data: bytes, read_timeout: float = 10.0, close_early: bool = False):
    """Sends `data` from a fresh socket and reads until the gateway closes. Returns
    (client_port, bytes received, seconds from the last send to the close)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        local = s.getsockname()[1]
        if data:
            s.sendall(data)
        t0 = time.monotonic()
        if close_early:
            return local, b"", 0.0
        got = bytearray()
        s.settimeout(read_timeout)
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return local, bytes(got), time.monotonic() - t0
    finally:
        s.close()


def check_common_conn_fields(e: dict):
    assert EVENT_ID_RE.match(e["event_id"]), e["event_id"]
    assert TS_RE.match(e["event_timestamp"]), e["event_timestamp"]
    c = e["object"]["conn"]
    assert isinstance(c["id"], int) and c["client_ip"] == "127.0.0.1"
    assert TS_RE.match(c["start_ts"]) and TS_RE.match(c["end_ts"]), c
    assert isinstance(c["duration_ns"], int) and c["duration_ns"] >= 0, c
    assert c["start_ts"] <= c["end_ts"], c


# ---- event log --------------------------------------------------------------------------------


def test_transfer_event_counts_exact_wire_bytes(gateway_factory, keys, upstream_factory, pki):
    # Proves: after a checksummed 1 MiB upload and download, tcp_connection_closed.v0 carries
    # bytes_in == every byte the client sent (ClientHello included) and bytes_out == every byte it
    # received, close_reason "closed", and the endpoint/session/key of the tunnel.
    gw = gateway_factory(args=["--event-log", EVENTS])
    up = upstream_factory("halfclose_client_first")
    gw.tunnel([fwd("app.alice.test", up)], key="alice").start()
    payload = os.urandom(1 << 20) + b"the end"
    c = MemTls.connect(gw.tls_port, pki.client_context(), "app.alice.test", timeout=60)
    try:
        local = c.sock.getsockname()[1]
        c.handshake()
        c.write(payload)
        c.send_close_notify()
        c.shutdown_write()
        got = c.read_until_eof()
    finally:
        c.close()
    assert got == hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    (r,) = up.wait_results(1)
    assert r["raw_in"] == bytes(c.raw_out) and r["raw_out"] == bytes(c.raw_in)

    e = conn_event(gw, local)
    check_common_conn_fields(e)
    conn = e["object"]["conn"]
    assert conn["bytes_in"] == len(c.raw_out), (conn["bytes_in"], len(c.raw_out))
    assert conn["bytes_out"] == len(c.raw_in), (conn["bytes_out"], len(c.raw_in))
    assert conn["bytes_in"] > len(payload) and conn["bytes_out"] > len(payload)
    assert conn["server_name"] == "app.alice.test"
    assert conn["close_reason"] == "closed" and conn["refusal_reason"] is None, conn
    (created,) = events(gw, "endpoint_created.v0")
    (started,) = events(gw, "session_started.v0")
    assert e["object"]["endpoint"] == {"id": created["object"]["id"],
                                       "url": f"tls://app.alice.test:{gw.tls_port}", "proto": "tls"}
    assert e["object"]["session"] == {"id": started["object"]["id"],
                                      "key_fingerprint": fingerprint(keys.pub("alice")),
                                      "key_name": "alice"}
    mode = stat.S_IMODE(os.stat(gw.dir / EVENTS).st_mode)
    assert mode & 0o007 == 0, f"event log is world-accessible: {oct(mode)} (docs: 0640)"


def test_refusal_events_have_the_right_reasons(gateway_factory, upstream):
    # Proves: each refusal after accept is one tcp_connection_closed.v0 with refusal_reason
    # no_route / no_sni / not_tls / malformed / timeout / closed_early, exact bytes_in, the alert's
    # 7 bytes in bytes_out where one is sent, and no endpoint or session.
    gw = gateway_factory(args=["--event-log", EVENTS, "--client-hello-timeout", "1"])
    gw.tunnel([fwd("app.alice.test", upstream)]).start()
    hello_unknown = client_hello("nobody.example.test")
    hello_nosni = client_hello(None)
    malformed = bytes.fromhex("16 0301 0008" "01 000004" "0303 0000")
    partial = hello_unknown[:6]
    cases = {}

    port, data, _ = raw_conn(gw.tls_port, hello_unknown)
    assert is_alert(data, ALERT_UNRECOGNIZED_NAME), data
    cases[port] = ("no_route", len(hello_unknown), 7, "nobody.example.test")
    port, data, _ = raw_conn(gw.tls_port, hello_nosni)
    assert is_alert(data, ALERT_UNRECOGNIZED_NAME), data
    cases[port] = ("no_sni", len(hello_nosni), 7, None)
    port, data, _ = raw_conn(gw.tls_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data == b"", data
    cases[port] = ("not_tls", len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0, None)
    port, data, _ = raw_conn(gw.tls_port, malformed)
    assert is_alert(data, ALERT_DECODE_ERROR), data
    cases[port] = ("malformed", len(malformed), 7, None)
    port, data, elapsed = raw_conn(gw.tls_port, partial)
    assert 0.7 <= elapsed <= 2.5, f"--client-hello-timeout 1 closed after {elapsed:.2f}s"
    cases[port] = ("timeout", len(partial), None, None)
    port, _, _ = raw_conn(gw.tls_port, partial, close_early=True)
    cases[port] = ("closed_early", len(partial), 0, None)

    problems = []  # every case is checked, then all mismatches reported together
    for port, (reason, bytes_in, bytes_out, sni) in cases.items():
        e = conn_event(gw, port)
        check_common_conn_fields(e)
        conn = e["object"]["conn"]
        want = {"refusal_reason": reason, "bytes_in": bytes_in, "server_name": sni}
        if bytes_out is not None:
            want["bytes_out"] = bytes_out  # docs/events.md: "including a TLS alert we sent"
        for field, value in want.items():
            if conn[field] != value:
                problems.append(f"{reason}: {field} = {conn[field]!r}, expected {value!r}")
        if conn["close_reason"] not in ("refused", "client_closed"):
            problems.append(f"{reason}: close_reason {conn['close_reason']!r}")
        if e["object"]["endpoint"] is not None or e["object"]["session"] is not None:
            problems.append(f"{reason}: endpoint/session not null: {e['object']}")
        if reason == "timeout" and not 0.8e9 <= conn["duration_ns"] <= 3e9:
            problems.append(f"timeout: duration_ns {conn['duration_ns']}")
    assert len(events(gw, "tcp_connection_closed.v0")) == len(cases), "one event per connection"
    assert upstream.accepted == 0
    assert not problems, "\n".join(problems)


def test_session_and_endpoint_events_in_order(gateway_factory, keys, upstream_factory, client_ctx):
    # Proves: a session's life is logged in order (session_started, endpoint_created per -R, the
    # connection, endpoint_deleted per -R with reason session_ended, session_ended with the session's
    # totals), with consistent ids, and event_ids increase in write order.
    gw = gateway_factory(args=["--event-log", EVENTS])
    up = upstream_factory("http", "up")
    t = gw.tunnel([fwd("app.alice.test", up), fwd("deep.x.alice.test", up)], key="alice",
                  user="e2e-user").start()
    port, answer = https_get_raw(gw.tls_port, "app.alice.test", client_ctx)
    assert b"hello from up" in answer
    conn = conn_event(gw, port)
    t.close()
    wait_for(lambda: events(gw, "session_ended.v0"), 10, "session_ended")

    evs = events(gw)
    kinds = [e["event_type"] for e in evs]
    assert kinds == ["session_started.v0", "endpoint_created.v0", "endpoint_created.v0",
                     "tcp_connection_closed.v0", "endpoint_deleted.v0", "endpoint_deleted.v0",
                     "session_ended.v0"], kinds
    ids = [e["event_id"] for e in evs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    assert all(EVENT_ID_RE.match(i) for i in ids), ids
    fp = fingerprint(keys.pub("alice"))
    started = evs[0]["object"]
    sid = started["id"]
    assert started["user"] == "e2e-user" and started["client_ip"] == "127.0.0.1", started
    assert started["key_fingerprint"] == fp and started["key_name"] == "alice", started
    assert isinstance(started["client_port"], int) and TS_RE.match(started["started_at"]), started
    created = [e["object"] for e in evs[1:3]]
    assert {c["url"] for c in created} == {f"tls://app.alice.test:{gw.tls_port}",
                                           f"tls://deep.x.alice.test:{gw.tls_port}"}, created
    for c in created:
        assert c["session_id"] == sid and c["proto"] == "tls" and c["pool"] is False, c
        assert c["key_fingerprint"] == fp and c["key_name"] == "alice", c
        assert re.match(r"^ep_\d+$", c["id"]) and TS_RE.match(c["created_at"]), c
    deleted = [e["object"] for e in evs[4:6]]
    assert {d["id"] for d in deleted} == {c["id"] for c in created}, deleted
    for d in deleted:
        assert d["reason"] == "session_ended" and d["session_id"] == sid, d
    ended = evs[6]["object"]
    assert ended["id"] == sid and ended["reason"] in ("client_disconnect", "user_quit"), ended
    assert ended["connections"] == 1, ended
    assert ended["bytes_in"] == conn["object"]["conn"]["bytes_in"], ended
    assert ended["bytes_out"] == conn["object"]["conn"]["bytes_out"], ended
    assert ended["started_at"] == started["started_at"] or ended["started_at"] <= ended["ended_at"]
    assert ended["key_fingerprint"] == fp and ended["client_port"] == started["client_port"], ended
    assert conn["object"]["endpoint"]["id"] in {c["id"] for c in created}
    assert conn["object"]["session"]["id"] == sid


def test_sighup_reopens_event_log(gateway_factory):
    # Proves: after the event log is renamed (as logrotate does) and SIGHUP is sent, new events go
    # to a new file at the original path, the old file keeps only the old ones, and snigate lives on.
    gw = gateway_factory(args=["--event-log", EVENTS])
    p1, _, _ = raw_conn(gw.tls_port, client_hello("before.example.test"))
    conn_event(gw, p1)
    rotated = gw.dir / (EVENTS + ".1")
    os.rename(gw.dir / EVENTS, rotated)
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: (gw.dir / EVENTS).exists(), 10, "the event log to be reopened at its path")
    p2, _, _ = raw_conn(gw.tls_port, client_hello("after.example.test"))
    e = conn_event(gw, p2)
    assert e["object"]["conn"]["server_name"] == "after.example.test"
    old = read_events(rotated)
    assert [x["object"]["conn"]["client_port"] for x in old] == [p1], old
    assert len(events(gw)) == 1
    assert gw.running()


def test_sigterm_writes_every_queued_event(gateway_factory, upstream, client_ctx):
    # Proves: events are written by a queue-draining thread, yet none is lost at a clean stop: after
    # SIGTERM (whose drain ends the session and its endpoints just before exit) the file holds the
    # whole story, nothing was counted as dropped, and the last log line made it out too.
    gw = gateway_factory(args=["--event-log", EVENTS])
    gw.tunnel([fwd("app.alice.test", upstream), fwd("api.alice.test", upstream)]).start()
    ports = {https_get_raw(gw.tls_port, name, client_ctx)[0]
             for name in ["app.alice.test", "api.alice.test"] * 3}
    assert gw.stop() == 0, tail(gw.log_text())
    by_type: dict[str, list[dict]] = {}
    for e in events(gw):
        by_type.setdefault(e["event_type"], []).append(e)
    assert len(by_type.get("session_started.v0", [])) == 1, by_type.keys()
    assert len(by_type.get("session_ended.v0", [])) == 1, by_type.keys()
    assert len(by_type.get("endpoint_created.v0", [])) == 2, by_type.keys()
    assert len(by_type.get("endpoint_deleted.v0", [])) == 2, by_type.keys()
    closed = {e["object"]["conn"]["client_port"] for e in by_type.get("tcp_connection_closed.v0", [])}
    assert ports <= closed, (ports, closed)
    assert re.search(r"serve\.stopped events_dropped=0 ", gw.log_text()), tail(gw.log_text())


# ---- what the user sees -------------------------------------------------------------------------


def test_verbose_session_prints_a_line_per_connection(gateway_factory, upstream, client_ctx):
    # Proves: `tls --verbose` prints `snigate: IP:PORT SNI NNms in=N out=N reason` for a finished
    # connection, with the client's port and the same byte counts as the event log.
    gw = gateway_factory(args=["--event-log", EVENTS])
    t = gw.tunnel([fwd("app.alice.test", upstream)], command="tls --verbose").start()
    port, answer = https_get_raw(gw.tls_port, "app.alice.test", client_ctx)
    assert b"200 OK" in answer
    line_re = re.compile(rf"snigate: 127\.0\.0\.1:{port} app\.alice\.test (\d+)ms in=(\d+) out=(\d+) (\S+)")
    m = wait_for(lambda: line_re.search(t.stdout() + t.stderr()), 10, "the verbose connection line")
    conn = conn_event(gw, port)["object"]["conn"]
    assert int(m.group(2)) == conn["bytes_in"] and int(m.group(3)) == conn["bytes_out"], (m.group(0), conn)
    assert m.group(4) == conn["close_reason"], (m.group(0), conn)
    assert int(m.group(1)) <= conn["duration_ns"] // 1_000_000 + 1


def test_without_verbose_only_failed_connections_are_reported(gateway_factory, upstream, client_ctx):
    # Proves: without --verbose a successful connection prints nothing in the session, while one
    # whose -R target is down is reported (the public client gets internal_error, the event says
    # upstream_refused). Lines are written in order on one channel, so the failure line is also
    # the barrier: once it shows, a line for the earlier connection would have shown before it.
    gw = gateway_factory(args=["--event-log", EVENTS])
    t = gw.tunnel([fwd("app.alice.test", upstream), fwd("down.alice.test", free_closed_port())]).start()
    ok_port, answer = https_get_raw(gw.tls_port, "app.alice.test", client_ctx)
    assert b"200 OK" in answer
    assert conn_event(gw, ok_port)["object"]["conn"]["close_reason"] in ("closed", "upstream_closed")
    port, data, _ = raw_conn(gw.tls_port, client_hello("down.alice.test"))
    assert is_alert(data, ALERT_INTERNAL_ERROR), data
    wait_for(lambda: "failed: your ssh client could not reach the -R target" in t.stdout() + t.stderr(),
             10, "the upstream-down line in the session")
    out = t.stdout() + t.stderr()
    line = [ln for ln in out.splitlines() if "could not reach" in ln][0]
    assert "127.0.0.1" in line and "down.alice.test" in line, line
    others = [ln for ln in out.splitlines()
              if ln.strip() and "snigate: Forwarding tls://" not in ln and "could not reach" not in ln]
    assert not others, f"lines without --verbose besides banners and the failure: {others}"
    conn = conn_event(gw, port)["object"]["conn"]
    assert conn["close_reason"] == "upstream_refused" and conn["refusal_reason"] is None, conn
    assert conn["bytes_out"] == len(data) == 7, (conn, data)  # the alert we sent counts
    # start_ts is the accept time: the duration covers the ClientHello wait and the open.
    assert conn["duration_ns"] > 0, conn


# ---- admin API ----------------------------------------------------------------------------------


def admin_gateway(gateway_factory, **kw):
    return gateway_factory(admin_listen="127.0.0.1:0", env={"SNIGATE_ADMIN_TOKEN": TOKEN},
                           args=["--event-log", EVENTS], **kw)


def get_json(gw, path: str):
    r = gw.admin("GET", path, token=TOKEN)
    assert r.status == 200, (path, r)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert r.headers.get("cache-control") == "no-store", r.headers
    return r.json()


def test_api_lists_endpoint_and_session(gateway_factory, keys, upstream, client_ctx):
    # Proves: /api/endpoints and /api/sessions describe the live tunnel with the documented fields
    # and values (ids matching the event log, key, client address, byte counts after traffic), and
    # the single-object routes return the same objects.
    gw = admin_gateway(gateway_factory)
    assert gw.admin_port, "serve.ready did not report admin=127.0.0.1:PORT"
    t = gw.tunnel([fwd("app.alice.test", upstream)], key="alice", user="api-user").start()
    port, answer = https_get_raw(gw.tls_port, "app.alice.test", client_ctx)
    conn = conn_event(gw, port)["object"]["conn"]
    started = events(gw, "session_started.v0")[0]["object"]
    created = events(gw, "endpoint_created.v0")[0]["object"]
    fp = fingerprint(keys.pub("alice"))
    client_addr = f"127.0.0.1:{started['client_port']}"

    def endpoint_with_bytes():
        eps = get_json(gw, "/api/endpoints")["endpoints"]
        return eps if len(eps) == 1 and eps[0]["bytes_in"] >= conn["bytes_in"] else None
    (ep,) = wait_for(endpoint_with_bytes, 10, "the endpoint's byte counts in the API")
    assert set(ep) >= {"id", "url", "proto", "created_at", "pool", "session_id", "key_fingerprint",
                       "key_name", "client_addr", "open_connections", "bytes_in", "bytes_out"}, ep
    assert ep["id"] == created["id"] and ep["url"] == f"tls://app.alice.test:{gw.tls_port}", ep
    assert ep["proto"] == "tls" and ep["pool"] is False and ep["session_id"] == started["id"], ep
    assert ep["key_fingerprint"] == fp and ep["key_name"] == "alice", ep
    assert ep["client_addr"] == client_addr, (ep, started)
    assert TS_RE.match(ep["created_at"]) or re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z$", ep["created_at"]), ep
    assert ep["open_connections"] == 0, ep
    assert ep["bytes_in"] == conn["bytes_in"] and ep["bytes_out"] == conn["bytes_out"], (ep, conn)
    assert get_json(gw, f"/api/endpoints/{ep['id']}") == ep

    (s,) = get_json(gw, "/api/sessions")["sessions"]
    assert s["id"] == started["id"] and s["user"] == "api-user", s
    assert s["client_addr"] == client_addr and s["key_fingerprint"] == fp and s["key_name"] == "alice", s
    assert s["endpoint_urls"] == [ep["url"]] and s["open_connections"] == 0, s
    assert isinstance(s["started_at"], str) and s["started_at"].endswith("Z"), s
    assert get_json(gw, f"/api/sessions/{s['id']}") == s
    assert get_json(gw, f"/api/sessions/s{s['id']}") == s
    assert t.running()
    assert s["state"] == "active", f"docs/api.md: state is authenticating|active|closing: {s}"


def test_api_delete_closes_session(gateway_factory, upstream):
    # Proves: DELETE /api/sessions/{id} answers 204, the user sees the admin's message and ssh exits,
    # the endpoint is gone from the API and from routing, and session_ended says admin_close.
    gw = admin_gateway(gateway_factory)
    other = gw.tunnel([fwd("app.bob.test", upstream)], key="bob").start()
    t = gw.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    sid = [s for s in get_json(gw, "/api/sessions")["sessions"]
           if any("app.alice.test" in u for u in s["endpoint_urls"])][0]["id"]
    r = gw.admin("DELETE", f"/api/sessions/{sid}?message=maintenance%20at%2014%3A00", token=TOKEN)
    assert r.status == 204 and r.body == b"", r
    t.wait_exit(10)
    assert "snigate: session closed by the gateway admin" in t.stderr(), t.describe()
    assert "maintenance at 14:00" in t.stderr(), t.describe()
    assert t.proc.returncode != 0, "ended by the gateway: autossh must restart it"
    assert t.stderr().count("closed by the gateway admin") == 1, t.describe()
    gw.wait_unrouted("app.alice.test", 5)
    wait_for(lambda: [e["url"] for e in get_json(gw, "/api/endpoints")["endpoints"]] ==
             [f"tls://app.bob.test:{gw.tls_port}"], 5, "only bob's endpoint to be listed")
    assert [s["id"] for s in get_json(gw, "/api/sessions")["sessions"]] != [] and \
        sid not in [s["id"] for s in get_json(gw, "/api/sessions")["sessions"]]
    assert gw.admin("GET", f"/api/sessions/{sid}", token=TOKEN).status == 404
    assert other.running() and gw.routed("app.bob.test")
    ended = wait_for(lambda: events(gw, "session_ended.v0"), 5, "session_ended")[0]["object"]
    assert ended["id"] == sid, ended
    assert (ended["reason"], ended["message"] and "maintenance at 14:00" in ended["message"]) == \
        ("admin_close", True), f"docs: session_ended reason admin_close with the message: {ended}"


def test_api_delete_without_message_says_it_once(gateway_factory, upstream):
    # Proves: a DELETE without a message shows the user one plain line (not the default message
    # repeated after "closed by the gateway admin:"), and ssh exits non-zero.
    gw = admin_gateway(gateway_factory)
    t = gw.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    sid = get_json(gw, "/api/sessions")["sessions"][0]["id"]
    assert gw.admin("DELETE", f"/api/sessions/{sid}", token=TOKEN).status == 204
    assert t.wait_exit(10) != 0, t.describe()
    lines = [ln for ln in t.stderr().splitlines() if "gateway admin" in ln]
    assert lines == ["snigate: session closed by the gateway administrator"], t.describe()


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/sessions/99999"), ("GET", "/api/sessions/s99999"),
    ("DELETE", "/api/sessions/99999"), ("GET", "/api/endpoints/ep_99999"),
    ("GET", "/api/no-such-route"),
])

def test_api_unknown_ids_are_404_json(gateway_factory, method, path):
    # Proves: an unknown session/endpoint id or path is 404 with the documented JSON error body.
    gw = admin_gateway(gateway_factory)
    r = gw.admin(method, path, token=TOKEN)
    assert r.status == 404, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    err = r.json()["error"]
    assert err["status"] == 404 and isinstance(err["message"], str) and err["message"], err


def test_api_wrong_method_is_405_with_allow(gateway_factory):
    # Proves: a known path with the wrong method is 405 with an Allow header and a JSON error.
    gw = admin_gateway(gateway_factory)
    r = gw.admin("POST", "/api/sessions", token=TOKEN, body=b"")
    assert r.status == 405, r
    assert "GET" in r.headers.get("allow", ""), r.headers
    assert r.json()["error"]["status"] == 405


@pytest.mark.parametrize("how", ["env", "file", "crlf_file", "flag"])
def test_admin_token_enforced(gateway_factory, tmp_path, how):
    # Proves: with a token (SNIGATE_ADMIN_TOKEN, --admin-token-file or --admin-token) every route but /healthz
    # answers 401 + WWW-Authenticate without it or with a wrong one (unknown paths too), 200 with it
    # (scheme case-insensitive); /healthz answers 200 "ok" with no token at all. A token file
    # with a CRLF line end or trailing blanks holds the same token.
    if how == "env":
        gw = gateway_factory(admin_listen="127.0.0.1:0", env={"SNIGATE_ADMIN_TOKEN": TOKEN})
    elif how == "flag":
        gw = gateway_factory(admin_listen="127.0.0.1:0", args=["--admin-token", TOKEN])
    else:
        f = tmp_path / "token"
        f.write_bytes(TOKEN.encode() + (b" \r\n" if how == "crlf_file" else b"\n"))
        gw = gateway_factory(admin_listen="127.0.0.1:0", args=["--admin-token-file", str(f)])
    for path in ("/metrics", "/api/endpoints", "/api/sessions", "/api/sessions/1", "/nope"):
        for token in (None, "wrong", TOKEN + "x", TOKEN[:-1]):
            r = gw.admin("GET", path, token=token)
            assert r.status == 401, (path, token, r)
            assert r.headers.get("www-authenticate") == 'Bearer realm="snigate"', r.headers
        r = gw.admin("GET", path, headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status == 401, (path, "Basic", r)
    assert gw.admin("DELETE", "/api/sessions/1").status == 401
    for path in ("/metrics", "/api/endpoints", "/api/sessions"):
        assert gw.admin("GET", path, token=TOKEN).status == 200, path
        assert gw.admin("GET", path, headers={"Authorization": f"bearer {TOKEN}"}).status == 200
    h = gw.admin("GET", "/healthz")
    assert h.status == 200 and h.body.strip() == b"ok", h
    assert gw.admin("GET", "/healthz", token="wrong").status == 200


def test_admin_without_token_refuses_rebinding_host(gateway_factory, upstream):
    # Proves: with no token on loopback, a request whose Host is a (rebinding) web name gets 421
    # with a JSON error naming both fixes, Connection: close, a warn line and a count in
    # snigate_admin_refused_total{reason="bad_host"}; so a web page that points its own name at
    # 127.0.0.1 can't read /api/sessions. Host values naming us (127.0.0.1 or localhost, with or
    # without the port) and /healthz from anywhere are served; with a token any Host is.
    gw = gateway_factory(admin_listen="127.0.0.1:0")
    gw.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    port = gw.admin_port
    for host in (f"rebind.attacker.test:{port}", "rebind.attacker.test", f"localhost:{port + 1}",
                 f"192.0.2.1:{port}"):
        for path in ("/api/sessions", "/api/endpoints", "/metrics"):
            r = gw.admin("GET", path, headers={"Host": host})
            assert r.status == 421, (host, path, r)
            assert r.headers.get("connection", "").lower() == "close", r.headers
            message = r.json()["error"]["message"]
            assert r.json()["error"]["status"] == 421
            assert f"set --admin-token, or use http://127.0.0.1:{port}" in message, message
            assert b"alice" not in r.body, r.body
    assert gw.admin("DELETE", "/api/sessions/1", headers={"Host": "rebind.attacker.test"}) \
        .status == 421
    assert gw.tunnels[0].running(), "a refused DELETE must not end the session"
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST"):
        r = gw.admin("GET", "/api/sessions", headers={"Host": host})
        assert r.status == 200 and r.json()["sessions"][0]["key_name"] == "alice", (host, r)
    assert gw.admin("GET", "/healthz", headers={"Host": "rebind.attacker.test"}).status == 200
    m = gw.admin("GET", "/metrics").body.decode()
    assert 'snigate_admin_refused_total{reason="bad_host"} 13' in m, \
        [ln for ln in m.splitlines() if "admin" in ln]
    assert "admin.refuse" in gw.log_text() and "status=421" in gw.log_text(), tail(gw.log_text())

    with_token = gateway_factory(admin_listen="127.0.0.1:0", env={"SNIGATE_ADMIN_TOKEN": TOKEN})
    r = with_token.admin("GET", "/api/sessions", token=TOKEN,
                         headers={"Host": "rebind.attacker.test"})
    assert r.status == 200, r


def test_non_loopback_admin_without_token_refused_at_start(gateway_factory):
    # Proves: --admin-listen on a non-loopback address without a token stops start-up: non-zero
    # exit (2, as for every bad value in DESIGN section 2), one `snigate:` line naming the option
    # and pointing at a flag that exists, and no serve.ready.
    gw = gateway_factory(start=False, admin_listen="0.0.0.0:0")
    p = subprocess.Popen(gw.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=gw.dir, env=clean_env(), start_new_session=True)
    try:
        out, err = p.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=10)
        pytest.fail("snigate started with a non-loopback admin API and no token")
    text = (out + err).decode(errors="replace")
    assert "serve.ready" not in text, tail(text)
    assert p.returncode != 0, tail(text)
    lines = [ln for ln in text.splitlines() if ln.startswith("snigate:")]
    assert len(lines) == 1 and "--admin-listen" in lines[0], text
    problems = []
    if p.returncode != 2:
        problems.append(f"exit status {p.returncode}, DESIGN section 2 says 2 for a bad value")
    help_text = subprocess.run([gw.command()[0], "serve", "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    flags = set(re.findall(r"--[a-z][a-z-]*[a-z]", lines[0]))
    missing = [f for f in flags if not re.search(re.escape(f) + r"(?![a-z-])", help_text)]
    if missing:
        problems.append(f"the refusal names options `serve --help` doesn't know: {missing}: {lines[0]}")
    assert not problems, problems


# ---- /metrics -----------------------------------------------------------------------------------


def test_metrics_parse_and_counters_move(gateway_factory, upstream, client_ctx):
    # Proves: /metrics is valid Prometheus text (checked by a strict parser) with the documented
    # families, and accepted / routed / refused{reason="no_route"} / bytes / gauges move by exactly
    # the traffic the test makes.
    gw = admin_gateway(gateway_factory)
    r = gw.admin("GET", "/metrics", token=TOKEN)
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain"), r
    assert "version=0.0.4" in r.headers["content-type"], r.headers
    m0 = parse_prometheus(r.body.decode())
    for fam in ("snigate_connections_accepted_total", "snigate_connections_routed_total",
                "snigate_bytes_in_total", "snigate_bytes_out_total", "snigate_endpoints",
                "snigate_sessions", "snigate_client_hello_wait_seconds_count",
                "snigate_channel_open_seconds_count"):
        assert any(k[0] == fam for k in m0), f"{fam} missing"
    assert metric(m0, "snigate_sessions") == 0 and metric(m0, "snigate_endpoints") == 0

    gw.tunnel([fwd("app.alice.test", upstream), fwd("deep.x.alice.test", upstream)]).start()
    ports = []
    for _ in range(3):
        port, answer = https_get_raw(gw.tls_port, "app.alice.test", client_ctx)
        assert b"200 OK" in answer
        ports.append(port)
    for _ in range(2):
        p, data, _ = raw_conn(gw.tls_port, client_hello("unknown.example.test"))
        assert is_alert(data, ALERT_UNRECOGNIZED_NAME)
        ports.append(p)
    evs = [conn_event(gw, p)["object"]["conn"] for p in ports]
    routed_in = sum(e["bytes_in"] for e in evs[:3])
    routed_out = sum(e["bytes_out"] for e in evs[:3])

    def scrape():
        return parse_prometheus(gw.admin("GET", "/metrics", token=TOKEN).body.decode())

    def settled():
        m = scrape()
        return m if metric(m, "snigate_connections_active") == 0 and \
            metric(m, "snigate_connections_routed_total") >= 3 else None
    m1 = wait_for(settled, 10, "the counters to settle")
    d = lambda name, **lb: metric(m1, name, **lb) - metric(m0, name, **lb)  # noqa: E731
    assert d("snigate_connections_accepted_total") == 5, d("snigate_connections_accepted_total")
    assert d("snigate_connections_routed_total") == 3
    assert d("snigate_connections_refused_total", reason="no_route") == 2
    assert metric(m1, "snigate_sessions") == 1 and metric(m1, "snigate_endpoints") == 2
    # bytes: the routed connections' wire bytes (the refused ones' hellos and alerts may count too)
    assert routed_in <= d("snigate_bytes_in_total") <= routed_in + 2 * 600, \
        (d("snigate_bytes_in_total"), routed_in)
    assert routed_out <= d("snigate_bytes_out_total") <= routed_out + 2 * 7, \
        (d("snigate_bytes_out_total"), routed_out)
    assert d("snigate_channel_open_seconds_count") == 3
    # docs/api.md: "accept to complete ClientHello (or giving up)": refused connections count too
    assert d("snigate_client_hello_wait_seconds_count") == 5, \
        f"{d('snigate_client_hello_wait_seconds_count')} of 5 ClientHellos observed"

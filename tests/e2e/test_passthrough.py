"""The data path: byte-exact passthrough, half-close both ways, large transfers, many connections,
and refusals that happen after routing (DESIGN section 4)."""

import hashlib
import os
import statistics
import threading
import time

from conftest import (ALERT_INTERNAL_ERROR, MemTls, bulk_exchange, client_hello, free_closed_port,
                      fwd, https_get, is_alert, raw_exchange, wait_for)

MiB = 1 << 20


def test_half_close_client_first_is_byte_exact(gateway, upstream_factory, pki):
    # Proves: the client's FIN reaches the upstream (it answers only after TCP EOF), the upstream's
    # answer and FIN come back, and the ciphertext arrives byte for byte as sent, both ways.
    up = upstream_factory("halfclose_client_first")
    gateway.tunnel([fwd("app.alice.test", up)]).start()
    payload = os.urandom(200_000) + b"the end"
    c = MemTls.connect(gateway.tls_port, pki.client_context(), "app.alice.test")
    try:
        c.handshake()
        c.write(payload)
        c.send_close_notify()
        c.shutdown_write()
        got = c.read_until_eof()  # bounded by MemTls's deadline: fails if no FIN comes back
    finally:
        c.close()
    assert got == hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    assert c.close_notify and c.tcp_eof
    (r,) = up.wait_results(1)
    assert r["got"] == payload and r["close_notify"] and r["tcp_eof"]
    assert r["raw_in"] == bytes(c.raw_out), "client->upstream ciphertext was altered"
    assert r["raw_out"] == bytes(c.raw_in), "upstream->client ciphertext was altered"


def test_half_close_upstream_first(gateway, upstream_factory, pki):
    # Proves: the upstream's FIN reaches the client (channel EOF -> shutdown(send)) while the other
    # direction stays open: the client still sends afterwards and the upstream receives it all.
    up = upstream_factory("halfclose_upstream_first")
    gateway.tunnel([fwd("app.alice.test", up)]).start()
    c = MemTls.connect(gateway.tls_port, pki.client_context(), "app.alice.test")
    try:
        c.handshake()
        first = c.read_until_eof()  # returns only once the upstream's FIN came through
        assert first == b"greeting from upstream, then FIN\n"
        assert c.close_notify
        late = b"written after the upstream's FIN " * 1000
        c.write(late)
        c.send_close_notify()
        c.shutdown_write()
        (r,) = up.wait_results(1)
    finally:
        c.close()
    assert r["got"] == late and r["close_notify"] and r["tcp_eof"]
    assert r["raw_in"] == bytes(c.raw_out)
    assert r["raw_out"] == bytes(c.raw_in)


def test_32_mib_each_way_with_checksums(gateway, upstream_factory, pki):
    # Proves: 32 MiB up and 32 MiB down at the same time arrive intact (SHA-256 on each side), i.e.
    # flow control neither deadlocks nor drops bytes.
    up = upstream_factory("echo")
    gateway.tunnel([fwd("app.alice.test", up)]).start()
    payload = os.urandom(32 * MiB)
    sent_sha = hashlib.sha256(payload).hexdigest()
    c = MemTls.connect(gateway.tls_port, pki.client_context(), "app.alice.test", timeout=180)
    try:
        c.handshake()
        received_sha = bulk_exchange(c, payload, expect=len(payload), timeout=100)
    finally:
        c.close()
    assert received_sha == sent_sha, "upstream->client bytes differ"
    (r,) = up.wait_results(1)
    assert r["bytes"] == len(payload) and r["sha256"] == sent_sha, "client->upstream bytes differ"


def test_200_concurrent_connections(gateway, upstream_factory, pki):
    # Proves: 200 TLS connections open at the same time through one tunnel each get their own echo.
    n = 200
    up = upstream_factory("echo")
    gateway.tunnel([fwd("app.alice.test", up)]).start()
    ctx = pki.client_context()
    all_open = threading.Barrier(n + 1, timeout=90)
    ramp = threading.Semaphore(32)  # at most 32 handshakes in flight (pending-ClientHello caps)
    errors: list[str] = []
    ok = []

    def one(i: int):
        c = None
        try:
            with ramp:
                c = MemTls.connect(gateway.tls_port, ctx, "app.alice.test", timeout=110)
                c.handshake()
            all_open.wait()  # every connection is up before any data flows
            msg = f"connection {i} ".encode() * 200
            c.write(msg)
            echoed = c.read_exactly(len(msg))
            if echoed != msg:
                errors.append(f"{i}: echo mismatch ({len(echoed)} bytes)")
            else:
                ok.append(i)
        except Exception as e:  # noqa: BLE001 - collect, report all at once
            errors.append(f"{i}: {type(e).__name__}: {e}")
            all_open.abort()
        finally:
            if c:
                c.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    try:
        all_open.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join(120)
    assert not errors, f"{len(errors)} failed, e.g. {errors[:5]}"
    assert len(ok) == n


def test_upstream_down_answers_internal_error(gateway):
    # Proves: when the ssh client cannot reach its upstream (channel open refused), the public
    # client gets alert internal_error (80), and the session and its endpoint stay.
    dead = free_closed_port()
    t = gateway.tunnel([fwd("app.alice.test", dead)]).start()
    for _ in range(2):
        r = raw_exchange(gateway.tls_port, [client_hello("app.alice.test")], read_timeout=10)
        assert is_alert(r.data, ALERT_INTERNAL_ERROR), r
        assert r.closed
    assert t.running(), "the session must survive a refused channel open"


def test_connections_per_endpoint_limit(gateway_factory, upstream_factory, pki):
    # Proves: --max-connections-per-endpoint caps the open connections of one endpoint: one more
    # gets alert internal_error (80) before any channel opens, the user's terminal says why, and
    # once one closes the next is served.
    up = upstream_factory("echo")
    gw = gateway_factory(args=["--max-connections-per-endpoint", "3"])
    t = gw.tunnel([fwd("app.alice.test", up)]).start()
    held = []
    for _ in range(3):
        c = MemTls.connect(gw.tls_port, pki.client_context(), "app.alice.test")
        c.handshake()
        held.append(c)
    r = raw_exchange(gw.tls_port, [client_hello("app.alice.test")], read_timeout=10)
    assert is_alert(r.data, ALERT_INTERNAL_ERROR) and r.closed, r
    wait_for(lambda: "already has 3 open connections" in t.stdout() + t.stderr(), 10,
             "the refusal on the user's terminal")
    assert up.accepted == 3, "the refused client must not reach the upstream"
    held.pop().close()
    wait_for(lambda: gw.routed("app.alice.test"), 10, "room for one more connection")
    for c in held:
        c.close()


def test_fresh_connections_have_no_nagle_stall(gateway, upstream, client_ctx):
    # Proves: a new connection through a -N session costs no ~40 ms Nagle/delayed-ACK stall (the
    # gateway sets TCP_NODELAY on its public and SSH sockets). Such a stall hits every request, so
    # the fastest of 15 full HTTPS GETs must be well under 40 ms (robust against a busy machine).
    gateway.tunnel([fwd("app.alice.test", upstream)], command=None).start()
    times = []
    for _ in range(15):
        t0 = time.monotonic()
        assert https_get(gateway.tls_port, "app.alice.test", client_ctx).status == 200
        times.append(time.monotonic() - t0)
    ms = [round(t * 1000, 1) for t in times]
    assert min(times) < 0.030, f"every request took 30 ms or more: {ms}"
    assert statistics.median(times) < 0.2, f"slow requests: {ms}"


def test_idle_connection_closed_after_idle_timeout(gateway_factory, upstream_factory, pki):
    # Proves: a routed connection on which neither side sends anything is closed once the idle
    # timeout passes (here 1 s), while one that keeps talking stays open past it.
    gateway = gateway_factory(args=["--idle-timeout", "1"])
    up = upstream_factory("echo")
    gateway.tunnel([fwd("app.alice.test", up)]).start()
    busy = MemTls.connect(gateway.tls_port, pki.client_context(), "app.alice.test")
    idle = MemTls.connect(gateway.tls_port, pki.client_context(), "app.alice.test")
    try:
        busy.handshake()
        idle.handshake()
        started = time.monotonic()
        # Keep `busy` talking for 3 s (well past the timeout), 4 echoes a second.
        while time.monotonic() - started < 3.0:
            busy.write(b"ping")
            assert busy.read_exactly(4) == b"ping"
            time.sleep(0.25)  # pacing the talker, not synchronisation
        got = idle.read_until_eof()  # bounded by MemTls's deadline
        waited = time.monotonic() - started
        assert got == b"" and idle.tcp_eof, "the idle connection was not closed"
        assert waited < 10.0
        busy.write(b"pong")
        assert busy.read_exactly(4) == b"pong", "the talking connection was closed too"
    finally:
        busy.close()
        idle.close()

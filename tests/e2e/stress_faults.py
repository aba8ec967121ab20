"""Faults: an upstream that refuses or resets, an ssh client killed mid-transfer, a public client
that stops reading while the upstream sends a lot, running out of file descriptors, and SIGTERM
with connections open. Each test says what the public client sees and what the gateway keeps."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time

import pytest

from conftest import (ALERT_INTERNAL_ERROR, MemTls, bulk_exchange, client_hello,
                      free_closed_port, fwd, https_get, is_alert, raw_exchange, source_stream,
                      wait_for)
from stresslib import (SANITIZED, KiB, MiB, Proc, figures, handshaken, median,  # noqa: F401
                       memory_limit_holds, metrics, scaled, sources, stress_gateway, timed_ms)

NAME = "app.alice.test"


def test_upstream_refuses_client_gets_alert_80_session_stays(gateway_factory, figures):
    # Proves: when the ssh client can't reach its upstream, each public client gets alert
    # internal_error (80) at once and the session and its endpoint stay up for the next one.
    gw = stress_gateway(gateway_factory)
    t = gw.tunnel([fwd(NAME, free_closed_port())]).start()
    took = []
    for _ in range(20):
        t0 = time.monotonic()
        r = raw_exchange(gw.tls_port, [client_hello(NAME)], read_timeout=10)
        took.append((time.monotonic() - t0) * 1000)
        assert is_alert(r.data, ALERT_INTERNAL_ERROR) and r.closed, r
    figures("alert 80 after (median)", median(took), "ms", "<= 1000", median(took) <= 1000)
    figures("session still up after 20 refusals", int(t.running()), "", "= 1", t.running())
    assert t.running(), "the session must survive refused channel opens"
    assert metrics(gw)["snigate_endpoints"] == 1


def test_upstream_reset_mid_stream_closes_the_public_connection(gateway_factory, upstream_factory,
                                                                pki, figures):
    # Proves: when the upstream resets the connection after sending data, the public client sees
    # its connection closed promptly (no hang), and the gateway's connection count returns to
    # zero. (An RST makes the ssh client's kernel drop what it had not read yet, so the client
    # may get less than was sent, but never more or other bytes.)
    up = upstream_factory("reset")
    gw = stress_gateway(gateway_factory)
    t = gw.tunnel([fwd(NAME, up)]).start()
    closes, received = [], []
    for _ in range(scaled(full=20, ci=5)):
        c = MemTls.connect(gw.tls_port, pki.client_context(), NAME, timeout=30)
        try:
            c.handshake()
            got, t_last = 0, time.monotonic()
            while not c.tcp_eof:
                try:
                    if not c.recv_raw():
                        break
                except ConnectionResetError:
                    break
                n = len(c.drain_app_data())
                if n:
                    got, t_last = got + n, time.monotonic()
            closes.append((time.monotonic() - t_last) * 1000)
            received.append(got)
            assert got <= 256 * KiB, f"got {got} bytes, the upstream sent 256 KiB"
        finally:
            c.close()
    wait_for(lambda: metrics(gw)["snigate_connections_active"] == 0, 10, "no active connections")
    figures("bytes received of 256 KiB before the close (median)", median(received) / KiB, "KiB")
    figures("closed after the upstream's RST, max", max(closes), "ms", "<= 2000",
            max(closes) <= 2000)
    assert max(closes) <= 2000, f"public clients saw the close only after {max(closes):.0f} ms"
    assert t.running()


def test_ssh_client_killed_mid_transfer(gateway_factory, upstream_factory, pki, figures):
    # Proves: kill -9 of the ssh client while its connections transfer closes every public
    # connection promptly, the endpoint goes away, and the gateway's memory and descriptors
    # return to where they were before the session.
    echo = upstream_factory("echo")
    gw = stress_gateway(gateway_factory)
    proc = Proc(gw.proc.pid)
    warm = gw.tunnel([fwd(NAME, echo)]).start()  # warm-up: one session and transfer, then gone
    c = MemTls.connect(gw.tls_port, pki.client_context(), NAME)
    c.handshake()
    bulk_exchange(c, os.urandom(MiB), MiB)
    c.close()
    warm.close()
    gw.wait_unrouted(NAME, timeout=10)
    wait_for(lambda: metrics(gw)["snigate_sessions"] == 0, 10, "warm-up session gone")
    fds0, rss0 = proc.fds(), proc.settled_rss_kib()

    t = gw.tunnel([fwd(NAME, echo)]).start()
    k = scaled(full=8, ci=4)
    conns = handshaken(gw, pki, NAME, k, timeout=60)
    outcome: dict[int, str] = {}
    payload = os.urandom(128 * MiB)  # far more than moves before the kill

    def transfer(i: int, c: MemTls):
        try:
            bulk_exchange(c, payload, len(payload), timeout=60)
            outcome[i] = "finished (the kill came too late)"
        except (ConnectionError, OSError) as e:
            outcome[i] = f"closed: {type(e).__name__}"
        except TimeoutError:
            outcome[i] = "hung"

    threads = [threading.Thread(target=transfer, args=(i, c), daemon=True)
               for i, c in enumerate(conns)]
    for th in threads:
        th.start()
    wait_for(lambda: metrics(gw)["snigate_bytes_in_total"] >= k * 4 * MiB, 30,
             "every connection transferring")
    t_kill = time.monotonic()
    t.kill(signal.SIGKILL)
    for th in threads:
        th.join(90)
    closed_in = time.monotonic() - t_kill
    for c in conns:
        c.close()
    gone_in = gw.wait_unrouted(NAME, timeout=15)
    wait_for(lambda: metrics(gw)["snigate_connections_active"] == 0, 15, "no active connections")
    wait_for(lambda: proc.fds() <= fds0, 15, f"descriptors back to {fds0}")
    fds1, rss1 = proc.fds(), proc.settled_rss_kib()
    growth = rss1 - rss0

    closed = sum(1 for v in outcome.values() if v.startswith("closed"))
    figures("public connections closed after kill -9", closed, "", f"= {k}", closed == k)
    figures("all closed within", closed_in, "s", "<= 5", closed_in <= 5)
    figures("endpoint gone within (after the closes)", gone_in, "s", "<= 5", gone_in <= 5)
    figures("gateway descriptors after vs before", fds1 - fds0, "", "<= 0", fds1 <= fds0)
    figures("gateway RSS after vs before the session", growth, "KiB", "<= 1024",
            growth <= 1024, memory=True)
    assert closed == k, outcome
    assert closed_in <= 5, f"public connections closed only after {closed_in:.1f}s"
    assert memory_limit_holds(growth <= 1024), f"RSS {rss0} -> {rss1} KiB"


def test_public_client_stops_reading_while_upstream_sends(gateway_factory, upstream_factory, pki,
                                                          figures):
    # Proves: a public client that stops reading while its upstream sends 1 GiB costs the gateway
    # at most a window's worth of memory (the flow stops at the SSH window), and when it reads
    # again every byte arrives, in order.
    total = scaled(full=1024, ci=128) * MiB
    src = upstream_factory("source", source_bytes=total)
    gw = stress_gateway(gateway_factory)
    gw.tunnel([fwd(NAME, src)]).start()
    proc = Proc(gw.proc.pid)
    c = MemTls.connect(gw.tls_port, pki.client_context(), NAME, timeout=600)
    c.handshake()
    first = c.read_exactly(MiB)  # data flows...
    rss0 = proc.rss_kib()
    # ... then the client stops reading: wait until the gateway stops taking bytes from the ssh
    # client (its counter stands still for a second), then see what it holds.
    last = [-1]

    def stalled():
        now = metrics(gw)["snigate_bytes_out_total"]
        still = now == last[0]
        last[0] = now
        return still
    wait_for(stalled, 30, "the flow to stop", interval=1.0)
    out_when_stalled = last[0]
    rss_stalled = proc.settled_rss_kib()
    growth = rss_stalled - rss0

    t0 = time.monotonic()
    digest, got = hashlib.sha256(first), len(first)
    while got < total and not c.tcp_eof:
        if not c.recv_raw():
            break
        chunk = c.drain_app_data()
        got += len(chunk)
        digest.update(chunk)
    took = time.monotonic() - t0
    c.close()
    expected = hashlib.sha256()
    for chunk in source_stream(total):
        expected.update(chunk)
    intact = got == total and digest.hexdigest() == expected.hexdigest()

    figures("upstream sends", total / MiB, "MiB")
    figures("bytes the gateway let through before the flow stopped", out_when_stalled / MiB, "MiB")
    figures("gateway RSS growth while the client doesn't read", growth / KiB, "MiB", "<= 4",
            growth <= 4 * KiB, memory=True)
    figures("rest read after the stall", took, "s")
    figures("all bytes arrived intact after resuming", int(intact), "", "= 1", intact)
    assert out_when_stalled < total / 2, "the flow never stopped"
    assert memory_limit_holds(growth <= 4 * KiB), f"RSS {rss0} -> {rss_stalled} KiB"
    assert got == total, f"got {got} of {total} bytes after resuming"
    assert digest.hexdigest() == expected.hexdigest(), "bytes changed on the way"


def test_out_of_file_descriptors_backs_off_and_recovers(gateway_factory, upstream, client_ctx,
                                                        figures):
    # Proves: when the gateway runs out of file descriptors (hard limit 128 here), its accept loop
    # logs the error and backs off instead of spinning, and it serves again as soon as
    # descriptors are free.
    if SANITIZED:
        # UBSan's vptr check probes memory through a pipe(); with no descriptor left the probe
        # fails and it reports every virtual call as an "invalid vptr" (false positives that its
        # suppressions can't match: the type is unreadable too). This one test needs a build
        # without the sanitizer runtime's own use of descriptors.
        pytest.skip("running out of descriptors breaks UBSan's own vptr check")
    gw = gateway_factory(args=["--log-level", "info", "--client-hello-timeout", "30"],
                         admin_listen="127.0.0.1:0", start=False)
    base = gw.command
    gw.command = lambda: ["prlimit", "--nofile=128:128", "--", *base()]
    gw.start()
    gw.tunnel([fwd(NAME, upstream)]).start()
    assert https_get(gw.tls_port, NAME, client_ctx).status == 200
    proc = Proc(gw.proc.pid)
    addrs = sources(2, block=7)
    hogs = []
    for i in range(200):  # more than the gateway has descriptors left
        s = socket.socket()
        s.bind((addrs[i % 2], 0))
        s.connect(("127.0.0.1", gw.tls_port))
        hogs.append(s)
    wait_for(lambda: "sni.accept_failed" in gw.log_text(), 10, "the gateway to run out of fds")
    assert "Too many open files" in gw.log_text()
    cpu0, t0 = proc.cpu_seconds(), time.monotonic()
    wait_for(lambda: time.monotonic() - t0 >= 2.0, 5, "two seconds out of descriptors")
    cpu = (proc.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    failures = gw.log_text().count("sni.accept_failed")

    t_free = time.monotonic()
    for s in hogs:
        s.close()

    def served():
        try:
            return https_get(gw.tls_port, NAME, client_ctx, timeout=2).status == 200
        except OSError:
            return False
    wait_for(served, 20, "the gateway to serve again")
    recovered = time.monotonic() - t_free
    after = timed_ms(lambda: https_get(gw.tls_port, NAME, client_ctx), 10)

    figures("descriptor limit (hard)", 128, "")
    figures("gateway CPU while out of descriptors", cpu * 100, "% of a core", "<= 20",
            cpu <= 0.2)
    figures("accept errors logged meanwhile", failures, "")
    figures("serving again after descriptors freed", recovered * 1000, "ms", "<= 2000",
            recovered <= 2.0)
    figures("request median after recovery", median(after), "ms")
    assert cpu <= 0.2, f"the gateway used {cpu:.0%} of a core while out of descriptors: spinning?"
    assert recovered <= 2.0, f"took {recovered:.1f}s to serve again"


def test_sigterm_drains_open_connections_without_losing_a_byte(gateway_factory, upstream_factory,
                                                               pki, figures):
    # Proves: on SIGTERM the gateway stops accepting at once, lets open connections finish (every
    # byte arrives both ways, checked by SHA-256 at both ends), then exits 0 by itself.
    echo = upstream_factory("echo")
    gw = stress_gateway(gateway_factory, args=["--drain-timeout", "60"])
    gw.tunnel([fwd(NAME, echo)]).start()
    k = scaled(full=8, ci=4)
    size = scaled(full=64, ci=16) * MiB
    payloads = [os.urandom(size) for _ in range(k)]
    conns = handshaken(gw, pki, NAME, k, timeout=120)
    digests: dict[int, str] = {}
    errors: dict[int, str] = {}

    def transfer(i: int):
        try:
            digests[i] = bulk_exchange(conns[i], payloads[i], size, timeout=120)
            conns[i].send_close_notify()
            conns[i].shutdown_write()
        except (OSError, ConnectionError, TimeoutError) as e:
            errors[i] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=transfer, args=(i,), daemon=True) for i in range(k)]
    for th in threads:
        th.start()
    wait_for(lambda: metrics(gw)["snigate_bytes_in_total"] >= k * MiB, 30, "transfers under way")
    in_at_signal = metrics(gw)["snigate_bytes_in_total"]
    t_term = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "serve.drain" in gw.log_text(), 10, "the drain to start")

    def refuses_new():
        try:
            socket.create_connection(("127.0.0.1", gw.tls_port), timeout=2).close()
            return False
        except ConnectionRefusedError:
            return True
    wait_for(refuses_new, 5, "new connections to be refused")
    refused_after = time.monotonic() - t_term
    for th in threads:
        th.join(150)
    rc = gw.proc.wait(60)
    exited_in = time.monotonic() - t_term
    for c in conns:
        c.close()
    ok = sum(1 for i, p in enumerate(payloads) if digests.get(i) == hashlib.sha256(p).hexdigest())
    up = {r["sha256"] for r in echo.wait_results(k, timeout=30)}
    upstream_ok = sum(1 for p in payloads if hashlib.sha256(p).hexdigest() in up)

    figures("connections open at SIGTERM", k, "")
    figures("share of the upload still to come at SIGTERM", 100 * (1 - in_at_signal / (k * size)),
            "%")
    figures("connections complete and intact (client)", ok, "", f"= {k}", ok == k)
    figures("connections complete and intact (upstream)", upstream_ok, "", f"= {k}",
            upstream_ok == k)
    figures("new connections refused after SIGTERM within", refused_after * 1000, "ms", "<= 1000",
            refused_after <= 1.0)
    figures("exit after SIGTERM", exited_in, "s", "<= 60 (drain timeout)", exited_in <= 60)
    assert not errors, errors
    assert ok == k and upstream_ok == k, "bytes lost or changed during the drain"
    assert refused_after <= 1.0, f"still accepting {refused_after:.1f}s after SIGTERM"
    assert rc == 0, f"snigate exited {rc} after the drain"
    assert in_at_signal < k * size, "the transfers had finished before SIGTERM: nothing was tested"

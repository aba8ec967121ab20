"""Public clients that stop reading while their upstream floods them (issue 16, item 6c): each
such connection may hold ~2.27 MiB in the gateway (the 2 MiB channel window and the bridge's
256 KiB), so one endpoint's stalled visitors must not add up without bound. The endpoint's and
the key's buffered bytes have a budget (sshd/session.cpp): over it, the connections whose
clients have read nothing for 500 ms are closed, longest stalled first. Meanwhile a reading
connection on the same endpoint, and one on another endpoint, keep their round trip."""

from __future__ import annotations

import socket
import time

from conftest import MemTls, fwd, https_get, wait_for
from stresslib import (SANITIZED, KiB, MiB, Proc, figures, metrics, percentile,  # noqa: F401
                       scaled, stress_gateway, timed_ms)

FLOOD = "src.alice.test"
OTHER = "app.alice.test"


def stalled_visitor(port: int, ctx, name: str) -> MemTls:
    """A TLS client that completes its handshake and then never reads: a small receive buffer,
    so the kernel absorbs little and the gateway has to hold (or refuse) the rest."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    c = MemTls(s, ctx, server_hostname=name, timeout=60)
    c.handshake()
    return c


def read_some(port: int, ctx, name: str, n: int) -> None:
    """The legitimate reader on the flooded endpoint: connect, handshake, read n bytes, close."""
    c = MemTls.connect(port, ctx, name, timeout=20)
    try:
        c.handshake()
        got = c.read_exactly(n)
        assert len(got) >= n, f"read {len(got)} of {n}"
    finally:
        c.close()


def test_stalled_readers_stay_within_the_endpoint_budget(gateway_factory, upstream_factory,
                                                         client_ctx, figures):
    # Proves: n visitors of one endpoint that stop reading while its upstream sends without end
    # pin at most the endpoint's budget (16 MiB) plus what stalled in the last 500 ms, not n x
    # 2.27 MiB: the stalled ones are closed (counted), longest stalled first; a reading
    # connection on the same endpoint and a request to another endpoint keep their round trip
    # within 2x idle + 5 ms. Before: every stalled visitor kept its 2.27 MiB (n = 64: +145 MiB).
    n = scaled(full=64, ci=32)
    src = upstream_factory("source", source_bytes=1 << 40)  # floods every connection
    app = upstream_factory("http")
    gw = stress_gateway(gateway_factory)
    gw.tunnel([fwd(FLOOD, src), fwd(OTHER, app)]).start()
    proc = Proc(gw.proc.pid)
    other = lambda: https_get(gw.tls_port, OTHER, client_ctx)  # noqa: E731
    same = lambda: read_some(gw.tls_port, client_ctx, FLOOD, 64 * KiB)  # noqa: E731
    base_other, base_same = timed_ms(other, 20), timed_ms(same, 20)
    rss0 = proc.settled_rss_kib()
    peak = rss0
    visitors = []
    try:
        # An attacker's pace: 20 a second (all at once is the same, only the part that stalled
        # in the last 500 ms is larger).
        for _ in range(n):
            visitors.append(stalled_visitor(gw.tls_port, client_ctx, FLOOD))
            time.sleep(0.05)  # the attack's pace, not synchronisation
            peak = max(peak, proc.rss_kib())
        # Wait (bounded) for the flow to stop: the gateway takes no more from the ssh client.
        last = [-1.0]

        def stopped():
            now = metrics(gw)["snigate_bytes_out_total"]
            still = now == last[0]
            last[0] = now
            return still
        wait_for(stopped, 30, "the flood into the stalled visitors to stop", interval=1.0)
        peak = max(peak, proc.settled_rss_kib())
        m = metrics(gw)
        during_other, during_same = timed_ms(other, 20), timed_ms(same, 20)
        peak = max(peak, proc.rss_kib())
    finally:
        for v in visitors:
            v.close()
    wait_for(lambda: metrics(gw).get("snigate_buffered_bytes", 0) == 0, 20,
             "the stalled visitors' bytes to be released")
    wait_for(lambda: src.open_connections() == 0, 30, "the upstream's connections to end")
    after_other, after_same = timed_ms(other, 20), timed_ms(same, 20)
    rss1 = proc.settled_rss_kib()
    closed = m.get("snigate_buffer_budget_closes_total", 0)
    held = m.get("snigate_buffered_bytes", 0)
    growth = peak - rss0
    ok = True
    for what, base, during, after in (
            ("another endpoint's request", base_other, during_other, after_other),
            ("a reader on the same endpoint (64 KiB)", base_same, during_same, after_same)):
        limit = 2 * percentile(base, 50) + 5
        p50, p50_after = percentile(during, 50), percentile(after, 50)
        figures(f"{what}: round trip p50 idle", percentile(base, 50), "ms")
        figures(f"{what}: round trip p99 idle", percentile(base, 99), "ms")
        figures(f"{what}: round trip p50 with the stalled visitors", p50, "ms",
                f"<= {limit:.1f}", p50 <= limit)
        figures(f"{what}: round trip p99 with the stalled visitors", percentile(during, 99), "ms")
        figures(f"{what}: round trip p50 after", p50_after, "ms", f"<= {limit:.1f}",
                p50_after <= limit)
        ok = ok and p50 <= limit and p50_after <= limit
    figures("stalled visitors opened (20/s)", n, "")
    figures("closed for the buffer budget (counted)", closed, "", ">= 1", closed >= 1)
    figures("held buffered once the flow stopped", held / MiB, "MiB", "<= 16 + 2.3",
            held <= 16 * MiB + 2.3 * MiB)
    figures("gateway RSS peak vs before", growth / KiB, "MiB", "<= 64", growth <= 64 * KiB,
            memory=True)
    figures("gateway RSS after vs before", (rss1 - rss0) / KiB, "MiB")
    assert ok
    assert closed >= 1 and held <= 16 * MiB + 2.3 * MiB
    assert growth <= 64 * KiB or SANITIZED

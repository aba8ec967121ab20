"""Hostile clients on the SSH port: floods of unauthenticated connections, slow key exchange, wrong
keys in a loop, and an ssh client that opens forwards and then never reads its channels."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import (ALERT_INTERNAL_ERROR, SSH, MemTls, clean_env, client_hello, fwd, https_get,
                      is_alert, raw_exchange, wait_for)
from stresslib import (KiB, MiB, Proc, figures, handshaken, hold_open, in_thread,  # noqa: F401
                       median, memory_limit_holds, metrics, scaled, sources, stress_gateway,
                       timed_ms)

NAME = "app.alice.test"
PER_IP = 32  # unauthenticated connections one IP may hold (--max-unauthenticated-per-ip)


def ssh_login_ms(gw, name: str, upstream) -> float:
    """Time from starting `ssh -R` to the banner naming the endpoint; closes the session."""
    t0 = time.monotonic()
    t = gw.tunnel([fwd(name, upstream)]).start()
    took = (time.monotonic() - t0) * 1000
    t.close()
    gw.wait_unrouted(name, timeout=10)
    return took


def test_unauthenticated_flood_is_capped_per_ip_and_logins_still_work(gateway_factory, upstream,
                                                                      figures):
    # Proves: from one IP at most 32 connections may sit unauthenticated (the rest are refused at
    # once, with a line saying why), silent and slow-key-exchange connections are closed at the
    # login grace, and meanwhile a real `ssh -R` from another address logs in about as fast as
    # without the flood.
    grace = 5
    gw = stress_gateway(gateway_factory, args=["--login-grace", str(grace)])
    baseline = [ssh_login_ms(gw, f"b{i}.alice.test", upstream) for i in range(3)]

    per_addr = 50
    silent_addrs, slow_addrs = sources(4, block=5), sources(2, block=6)
    # Slow ones send an SSH version line a byte every half second: a key exchange that never ends.
    silent = in_thread(hold_open, gw.ssh_port, silent_addrs * per_addr, b"", 1.0, grace + 10)
    slow = in_thread(hold_open, gw.ssh_port, slow_addrs * per_addr, b"SSH-2.0-slowpoke\r\n", 0.5,
                     grace + 10)
    held_expected = PER_IP * (len(silent_addrs) + len(slow_addrs))
    refused_expected = (per_addr - PER_IP) * (len(silent_addrs) + len(slow_addrs))
    wait_for(lambda: metrics(gw)["snigate_sessions_refused_total"] >= refused_expected, 10,
             f"{refused_expected} connections over the per-IP cap refused")
    m = metrics(gw)
    held = m["snigate_sessions_unauthenticated"]
    t_flood = time.monotonic()
    during = [ssh_login_ms(gw, f"d{i}.alice.test", upstream) for i in range(3)]
    during_window = time.monotonic() - t_flood

    results = silent(60) + slow(60)
    refused = [r for r in results if r[0] is not None and r[0] < 1.0]
    at_grace = [r[0] for r in results if r[0] is not None and r[0] >= 1.0]
    never = [r for r in results if r[0] is None]
    told = sum(1 for r in refused if b"too many unauthenticated connections from your address" in r[1])
    delay = median(during) - median(baseline)

    figures(f"unauthenticated held (6 IPs x {per_addr} tries)", held, "", f"= {held_expected}",
            held == held_expected)
    figures("refused at once, with the reason", told, "", f"= {refused_expected}",
            told == refused_expected)
    figures("held ones closed at login grace, min", min(at_grace), "s", f">= {grace - 0.5}",
            min(at_grace) >= grace - 0.5)
    figures("held ones closed at login grace, max", max(at_grace), "s", f"<= {grace + 2}",
            max(at_grace) <= grace + 2)
    figures("ssh -R login, idle (median)", median(baseline), "ms")
    figures("ssh -R login during flood (median)", median(during), "ms", "<= idle + 500",
            delay <= 500)
    assert held == held_expected, f"{held} unauthenticated held, expected {held_expected}"
    assert len(refused) == refused_expected and told == refused_expected, \
        f"{len(refused)} refused at once ({told} with the reason), expected {refused_expected}"
    assert during_window < grace, "the logins were not all made while the flood was held"
    assert not never, f"{len(never)} flood connections never closed"
    assert len(at_grace) == held_expected
    assert grace - 0.5 <= min(at_grace) and max(at_grace) <= grace + 2, at_grace
    assert delay <= 500, f"logins slowed by {delay:.0f} ms: {during} vs {baseline}"
    wait_for(lambda: metrics(gw)["snigate_sessions_unauthenticated"] == 0, 10,
             "no unauthenticated connections left")


def wrong_key_login(gw, keys) -> subprocess.CompletedProcess:
    """ssh with two keys the gateway doesn't know (mallory's and a fresh one): refused."""
    return subprocess.run(
        [SSH, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={gw.known_hosts}",
         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
         "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=20",
         "-i", str(keys.path("mallory")), "-i", str(keys.path("mallory2")),
         "-p", str(gw.ssh_port), "-N", "-R", fwd(NAME, 9), "x@127.0.0.1"],
        capture_output=True, text=True, timeout=60, env=clean_env())


def test_wrong_keys_in_a_loop(gateway_factory, upstream, client_ctx, keys, figures):
    # Proves: a client retrying with wrong keys over and over is refused every time ("Permission
    # denied"), doesn't slow the tunnel that is serving meanwhile, and leaves no descriptors or
    # memory behind.
    gw = stress_gateway(gateway_factory)
    gw.tunnel([fwd(NAME, upstream)]).start()
    get = lambda: https_get(gw.tls_port, NAME, client_ctx)  # noqa: E731
    proc = Proc(gw.proc.pid)
    assert wrong_key_login(gw, keys).returncode == 255  # warm-up (and keys generated)
    wait_for(lambda: metrics(gw)["snigate_sessions_unauthenticated"] == 0, 10, "warm-up done")
    baseline = timed_ms(get, 20)
    fds0, rss0 = proc.fds(), proc.settled_rss_kib()
    failures0 = metrics(gw)["snigate_auth_failures_total"]

    n = scaled(full=200, ci=40)
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        attempts = [pool.submit(wrong_key_login, gw, keys) for _ in range(n)]
        during = timed_ms(get, 20)
        outcomes = [a.result(timeout=120) for a in attempts]
    took = time.monotonic() - t0
    denied = sum(1 for o in outcomes if o.returncode == 255 and "Permission denied" in o.stderr)
    wait_for(lambda: metrics(gw)["snigate_sessions_unauthenticated"] == 0, 10,
             "no unauthenticated connections left")
    wait_for(lambda: proc.fds() <= fds0, 10, f"descriptors back to {fds0}")
    fds1, rss1 = proc.fds(), proc.settled_rss_kib()
    failures = metrics(gw)["snigate_auth_failures_total"] - failures0
    delay = median(during) - median(baseline)
    growth = rss1 - rss0

    figures("wrong-key logins (4 at a time)", n, "")
    figures("wrong-key logins per second", n / took, "/s")
    figures("refused with Permission denied", denied, "", f"= {n}", denied == n)
    figures("auth failures counted (2 keys per login)", failures, "", f"= {2 * n}", failures == 2 * n)
    figures("tunnel request delay meanwhile (median)", delay, "ms", "<= 100", delay <= 100)
    figures("gateway descriptors after vs before", fds1 - fds0, "", "<= 0", fds1 <= fds0)
    figures("gateway RSS growth after", growth, "KiB", "<= 1024",
            growth <= 1024, memory=True)
    assert denied == n, [o.stderr[-300:] for o in outcomes if "Permission denied" not in o.stderr][:3]
    assert failures == 2 * n, f"{failures} auth failures counted for {n} logins with 2 keys each"
    assert delay <= 100, f"tunnel slowed by {delay:.0f} ms: {during} vs {baseline}"
    assert memory_limit_holds(growth <= 1024), f"RSS {rss0} -> {rss1} KiB"


def push_until_blocked(conn: MemTls, data: bytes, idle: float, bound: float) -> int:
    """Sends `data` without reading until the socket stays unwritable for `idle` seconds (the flow
    has stopped) or `bound` passes. Returns the bytes the kernel took."""
    sock = conn.sock
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + bound
    while sent < len(data) and time.monotonic() < deadline:
        _, w, _ = select.select([], [sock], [], idle)
        if not w:
            break
        try:
            sent += sock.send(data[sent:sent + 262144])
        except BlockingIOError:
            pass
    return sent


def finish_exchange(conn: MemTls, data: bytes, sent: int, expect: int, bound: float) -> str:
    """Sends the rest of `data` from `sent` while reading the echo; SHA-256 of the plaintext read."""
    sock = conn.sock
    digest, got = hashlib.sha256(), 0
    deadline = time.monotonic() + bound
    while got < expect:
        left = deadline - time.monotonic()
        assert left > 0, f"echo: {got}/{expect} bytes back, {sent}/{len(data)} sent"
        r, w, _ = select.select([sock], [sock] if sent < len(data) else [], [], min(left, 1.0))
        if w:
            try:
                sent += sock.send(data[sent:sent + 262144])
            except BlockingIOError:
                pass
        if r:
            chunk = sock.recv(262144)
            assert chunk, f"closed after {got}/{expect} bytes"
            conn.incoming.write(chunk)
            plain = conn.drain_app_data()
            got += len(plain)
            digest.update(plain)
    return digest.hexdigest()


def test_client_that_stops_reading_its_channels(gateway_factory, upstream_factory, pki, figures):
    # Proves: when the ssh client stops reading (SIGSTOP: its forwards are open, nothing drains
    # them), public clients that keep sending are stopped by the SSH window and TCP, the gateway's
    # memory grows by at most about one window per connection, a new connection, whose channel
    # open gets no answer, gets alert 80 after the 10 s channel-open timeout, and once the client
    # reads again every byte arrives intact and the late-answered open is closed (the client's
    # connection to its upstream for it ends too).
    echo = upstream_factory("echo")
    gw = stress_gateway(gateway_factory)
    t = gw.tunnel([fwd(NAME, echo)]).start()
    proc = Proc(gw.proc.pid)
    k = scaled(full=8, ci=4)
    size = scaled(full=32, ci=16) * MiB
    payloads = [os.urandom(size) for _ in range(k)]
    conns = handshaken(gw, pki, NAME, k, timeout=300)
    ciphertexts = []
    for c, p in zip(conns, payloads):
        for i in range(0, len(p), 16384):
            c.obj.write(p[i:i + 16384])
        ciphertexts.append(c.outgoing.read())
    rss0 = proc.settled_rss_kib()

    os.killpg(t.proc.pid, signal.SIGSTOP)
    try:
        late = ThreadPoolExecutor(1)
        unanswered = late.submit(raw_exchange, gw.tls_port, [client_hello(NAME)], read_timeout=20)
        sent = [push_until_blocked(c, ct, idle=1.0, bound=60) for c, ct in zip(conns, ciphertexts)]
        rss_stalled = proc.settled_rss_kib()
        late_result = unanswered.result(timeout=30)
        late.shutdown()
    finally:
        os.killpg(t.proc.pid, signal.SIGCONT)
    growth = rss_stalled - rss0
    per_conn = growth / k
    digests = [finish_exchange(c, ct, s, size, bound=240)
               for c, ct, s in zip(conns, ciphertexts, sent)]
    for c in conns:
        c.close()
    # k transfers plus the timed-out open, whose upstream connection must not be left open.
    wait_for(lambda: echo.accepted == k + 1 and echo.open_connections() == 0, 30,
             "every upstream connection closed, the late-answered open's included")
    upstream_closed = echo.accepted - echo.open_connections()

    figures("connections pushing at a stopped ssh client", k, "")
    figures("bytes taken before the flow stopped, per conn (median)", median(sent) / MiB, "MiB",
            f"< {size // MiB}", max(sent) < len(ciphertexts[0]))
    figures("gateway RSS growth per stalled connection", per_conn / KiB, "MiB", "<= 4",
            per_conn <= 4 * KiB, memory=True)
    timed_out = is_alert(late_result.data, ALERT_INTERNAL_ERROR) and late_result.closed
    figures("new connection while stopped: alert 80 after", late_result.elapsed, "s", "10..12",
            timed_out and 10 <= late_result.elapsed <= 12)
    intact = sum(1 for d, p in zip(digests, payloads) if d == hashlib.sha256(p).hexdigest())
    figures("connections intact after SIGCONT", intact, "", f"= {k}", intact == k)
    assert max(sent) < len(ciphertexts[0]), "nothing stopped the flow"
    assert memory_limit_holds(per_conn <= 4 * KiB), \
        f"RSS {rss0} -> {rss_stalled} KiB for {k} stalled connections"
    figures("upstream connections closed (transfers + late open)", upstream_closed, "", f"= {k + 1}",
            upstream_closed == k + 1)
    assert timed_out and 10 <= late_result.elapsed <= 12, late_result
    assert intact == k, "bytes lost or changed after the client resumed"
    assert t.running()


def test_full_unauthenticated_cap_never_locks_out_another_address(gateway_factory, upstream,
                                                                   figures):
    # Proves (issue 16 item 7): 256 silent connections from 8 IPs (32 each: under the per-IP cap)
    # fill the global unauthenticated cap, yet a real `ssh -R` login from another address gets
    # in at once (the heaviest address's oldest connection makes room), and the flood's sources,
    # whose connections keep being evicted or timing out, are then refused at once for a while
    # (the penalty box) instead of filling the cap again.
    gw = stress_gateway(gateway_factory, args=["--login-grace", "20"])
    flood_addrs = sources(8, block=7)
    flood = in_thread(hold_open, gw.ssh_port, flood_addrs * PER_IP, b"", 1.0, 30)
    wait_for(lambda: metrics(gw)["snigate_sessions_unauthenticated"] >= 8 * PER_IP, 20,
             "the flood to fill the global cap")
    held = metrics(gw)["snigate_sessions_unauthenticated"]
    logins = []
    for i in range(3):
        t0 = time.monotonic()
        t = gw.tunnel([fwd(f"l{i}.alice.test", upstream)], extra=["-b", "127.0.0.2"]).start()
        logins.append(time.monotonic() - t0)
        t.close()
    # The rest are closed at the 10 s key-exchange deadline (not the 20 s login grace), each
    # a strike for its source: one reconnecting now is in the penalty box.
    results = flood(60)
    reconnect = in_thread(hold_open, gw.ssh_port, [flood_addrs[0]], b"", 1.0, 5)(15)
    told = reconnect[0][1]
    closed_at = [r[0] for r in results if r[0] is not None]
    figures("flood connections closed at the key-exchange deadline, max", max(closed_at), "s",
            "<= 13", max(closed_at) <= 13)
    figures("unauthenticated held by the flood (8 IPs x 32)", held, "", "= 256", held == 256)
    figures("ssh -R login from another address, worst of 3", max(logins), "s", "<= 5",
            max(logins) <= 5)
    figures("flood connections closed (evicted or timed out)",
            sum(1 for r in results if r[0] is not None), "", f"= {len(results)}",
            all(r[0] is not None for r in results))
    in_box = b"left too many logins unfinished" in told
    figures("a flood source reconnecting is refused (penalty box)", int(in_box), "", "= 1", in_box)
    assert held == 256 and max(logins) <= 5, logins
    assert in_box, told

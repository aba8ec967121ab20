"""The public side before routing: ClientHellos across segments and records, and every refusal that
needs no tunnel (DESIGN section 4)."""

import socket
import time

import pytest

from conftest import (ALERT_DECODE_ERROR, ALERT_RECORD_OVERFLOW, ALERT_UNRECOGNIZED_NAME, MemTls,
                      client_hello, fwd, https_get, is_alert, raw_exchange, reframe, split_records)


def _handshake_and_compare(gateway, upstream_factory, pki, send_first_flight):
    """Handshake with a custom first flight, then a half-closed exchange; returns the upstream's
    record of the connection after checking the bytes it saw are exactly the bytes we sent."""
    up = upstream_factory("halfclose_client_first")
    gateway.tunnel([fwd("app.alice.test", up)]).start()
    c = MemTls.connect(gateway.tls_port, pki.client_context(), "app.alice.test")
    try:
        c.handshake(lambda hello: send_first_flight(c, hello))  # verifies the upstream's cert
        c.write(b"ping")
        c.send_close_notify()
        c.shutdown_write()
        got = c.read_until_eof()
    finally:
        c.close()
    assert got.endswith(b"\nping")
    (r,) = up.wait_results(1)
    assert r["raw_in"] == bytes(c.raw_out), "the peeked bytes were not replayed exactly"
    assert r["raw_out"] == bytes(c.raw_in)
    return r


def test_client_hello_one_byte_at_a_time(gateway, upstream_factory, pki):
    # Proves: a ClientHello arriving one byte per TCP segment is reassembled, routed and replayed
    # unchanged, and the handshake completes with the upstream's verified certificate.
    def dribble(c, hello):
        assert len(hello) < 1500  # ~1 ms apart: well inside the 3 s ClientHello timeout
        for i in range(len(hello)):
            c.send_raw(hello[i:i + 1])
            time.sleep(0.001)
    _handshake_and_compare(gateway, upstream_factory, pki, dribble)


def test_client_hello_spread_over_several_records(gateway, upstream_factory, pki):
    # Proves: a ClientHello fragmented into many TLS records (each its own segment, the SNI far
    # from the first record) is reassembled for routing and passed on exactly as framed.
    def multi_record(c, hello):
        framed = reframe(hello, 40)
        records = split_records(framed)
        assert len(records) >= 5, len(records)
        pos = 0
        for _, _, payload in records:
            c.send_raw(framed[pos:pos + 5 + len(payload)])
            pos += 5 + len(payload)
            time.sleep(0.005)
    _handshake_and_compare(gateway, upstream_factory, pki, multi_record)


def test_client_hello_several_records_in_one_segment(gateway, upstream_factory, pki):
    # Proves: several handshake records in one write (records split at odd sizes) also work.
    _handshake_and_compare(gateway, upstream_factory, pki,
                           lambda c, hello: c.send_raw(reframe(hello, 7)))


def test_unknown_sni_gets_unrecognized_name(gateway, upstream):
    # Proves: a name no session holds is answered with alert unrecognized_name (112), then closed.
    gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    r = raw_exchange(gateway.tls_port, [client_hello("nobody.example.org")])
    assert is_alert(r.data, ALERT_UNRECOGNIZED_NAME), r
    assert r.closed


def test_unknown_sni_with_no_sessions_at_all(gateway):
    # Proves: with an empty route table the answer is the same alert 112.
    r = raw_exchange(gateway.tls_port, [client_hello("app.alice.test")])
    assert is_alert(r.data, ALERT_UNRECOGNIZED_NAME), r
    assert r.closed


def test_no_sni_gets_unrecognized_name(gateway, upstream):
    # Proves: a ClientHello without server_name is answered with alert 112, then closed.
    gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    hello = client_hello(None)
    assert b"app.alice.test" not in hello
    r = raw_exchange(gateway.tls_port, [hello])
    assert is_alert(r.data, ALERT_UNRECOGNIZED_NAME), r
    assert r.closed


def test_non_tls_bytes_closed_without_alert(gateway):
    # Proves: plain HTTP on the TLS port is closed with not a byte sent back (no alert for non-TLS).
    r = raw_exchange(gateway.tls_port, [b"GET / HTTP/1.1\r\nHost: app.alice.test\r\n\r\n"])
    assert r.closed, r
    assert r.data == b"", r


def test_malformed_client_hello_gets_decode_error(gateway):
    # Proves: a complete handshake message that is not a valid ClientHello (4-byte body, no random)
    # is answered with alert decode_error (50), then closed.
    bad = bytes.fromhex("16 0301 0008" "01 000004" "0303 0000")
    r = raw_exchange(gateway.tls_port, [bad])
    assert is_alert(r.data, ALERT_DECODE_ERROR), r
    assert r.closed


@pytest.mark.parametrize("pause", [0.0, 0.2], ids=["one_write", "two_writes"])
def test_hello_past_the_read_cap_in_tiny_records_is_refused(gateway, upstream, client_ctx, pause):
    # Proves: a handshake message announced as 64 KiB but sent as 1-byte records reaches the
    # router's 80 KiB read cap before it is complete; the client gets record_overflow (22) at
    # once and the router goes on serving others. (A regression test: at exactly the cap the
    # read loop once spun forever on its I/O thread.)
    gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    body = bytes([0x01, 0x00, 0xFF, 0xFF]) + bytes(20_000)
    records = b"".join(bytes([0x16, 0x03, 0x01, 0x00, 0x01, b]) for b in body)  # 120 KB
    r = raw_exchange(gateway.tls_port, [records[:40_000], records[40_000:]], pause=pause,
                     read_timeout=5)
    assert is_alert(r.data, ALERT_RECORD_OVERFLOW), r
    assert r.closed and r.elapsed < 2.0, r
    for _ in range(6):  # connections land on every I/O thread (SO_REUSEPORT spreads them)
        assert https_get(gateway.tls_port, "app.alice.test", client_ctx, timeout=5).status == 200


@pytest.mark.parametrize("first_bytes", [b"", b"\x16\x03\x01\x02\x00\x01"], ids=["silent", "partial"])
def test_client_hello_timeout_is_3_seconds(gateway_factory, first_bytes):
    # Proves: a connection that sends nothing (or only the start of a ClientHello) is closed after
    # the 3 s ClientHello timeout: not much sooner, not much later. (With --ssh-on-tls-port, the
    # default, a silent one is SSH after 300 ms: test_ssh_on_tls_port.py.)
    gateway = gateway_factory(args=["--no-ssh-on-tls-port"] if not first_bytes else [])
    r = raw_exchange(gateway.tls_port, [first_bytes] if first_bytes else [], read_timeout=10)
    assert r.closed, f"still open after {r.elapsed:.1f}s"
    assert 2.5 <= r.elapsed <= 5.0, f"closed after {r.elapsed:.2f}s"


def test_router_keeps_serving_while_a_hello_is_pending(gateway, upstream, client_ctx):
    # Proves: one client stalling mid-ClientHello does not block routing of others.
    gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    stalled = socket.create_connection(("127.0.0.1", gateway.tls_port), timeout=10)
    try:
        stalled.sendall(client_hello("app.alice.test")[:20])
        t0 = time.monotonic()
        assert https_get(gateway.tls_port, "app.alice.test", client_ctx).status == 200
        assert time.monotonic() - t0 < 2.5
    finally:
        stalled.close()

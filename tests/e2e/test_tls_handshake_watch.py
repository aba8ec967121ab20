"""The TLS handshake watch on the byte path (docs/security.md, `--tls-handshake-timeout`): until the
client's first application_data record the gateway checks the client's record headers and the
handshake's duration; after it, nothing (the bulk tests in test_passthrough.py run with it on)."""

import struct
import time

from conftest import (ALERT_RECORD_OVERFLOW, client_hello, fwd, is_alert, raw_exchange,
                      read_events, wait_for)

EVENTS = "events.jsonl"
UNEXPECTED_MESSAGE = 10


def closed(gw) -> list[dict]:
    return [e["object"]["conn"] for e in read_events(gw.dir / EVENTS)
            if e["event_type"] == "tcp_connection_closed.v0"]


def test_handshake_not_finished_in_time_is_closed(gateway_factory, upstream_factory):
    # Proves: a client that sends its ClientHello and then no application_data is closed once
    # --tls-handshake-timeout (2 s here) has passed, far before the idle timeout, with the
    # event's own close reason.
    gw = gateway_factory(args=["--event-log", EVENTS, "--tls-handshake-timeout", "2"])
    gw.tunnel([fwd("app.alice.test", upstream_factory("silent"))]).start()
    t0 = time.monotonic()
    r = raw_exchange(gw.tls_port, [client_hello("app.alice.test")], read_timeout=15)
    took = time.monotonic() - t0
    assert r.closed or r.reset, r
    assert 1.5 < took < 10, took
    conn = wait_for(lambda: closed(gw), 10, "the connection's record")[-1]
    assert conn["close_reason"] == "tls_handshake_timeout", conn


def test_oversize_record_before_the_handshake_ends_gets_record_overflow(gateway_factory,
                                                                        upstream_factory):
    # Proves: a client record over 2^14 + 2048 bytes before the handshake is over closes the
    # connection with alert 22 (nothing of the upstream's had gone down) and its close reason.
    gw = gateway_factory(args=["--event-log", EVENTS])
    gw.tunnel([fwd("app.alice.test", upstream_factory("silent"))]).start()
    oversize = struct.pack("!BHH", 22, 0x0303, (1 << 14) + 2048 + 1)
    r = raw_exchange(gw.tls_port, [client_hello("app.alice.test") + oversize], read_timeout=10)
    assert is_alert(r.data, ALERT_RECORD_OVERFLOW), r
    conn = wait_for(lambda: closed(gw), 10, "the connection's record")[-1]
    assert conn["close_reason"] == "tls_record_overflow", conn


def test_non_tls_record_type_before_the_handshake_ends_gets_unexpected_message(
        gateway_factory, upstream_factory):
    # Proves: a record of a type outside 20-23 (here heartbeat, 24) before the handshake is over
    # closes the connection with alert 10 and its close reason.
    gw = gateway_factory(args=["--event-log", EVENTS])
    gw.tunnel([fwd("app.alice.test", upstream_factory("silent"))]).start()
    heartbeat = struct.pack("!BHH", 24, 0x0303, 3) + b"\x01\x40\x00"
    r = raw_exchange(gw.tls_port, [client_hello("app.alice.test") + heartbeat], read_timeout=10)
    assert is_alert(r.data, UNEXPECTED_MESSAGE), r
    conn = wait_for(lambda: closed(gw), 10, "the connection's record")[-1]
    assert conn["close_reason"] == "tls_bad_record_type", conn

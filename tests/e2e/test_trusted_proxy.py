"""--trusted-proxy: a real HAProxy 2.6 (`mode tcp`, `send-proxy-v2`) in front of one real snigate.
The visitor's address, not HAProxy's, is what the ssh client's forwarded-tcpip originator, the
user's `tls --verbose` line, the event's client_ip and a `tls --allow-cidr` rule see; a trusted
source without a header and an untrusted one with a header are both refused and counted."""
import shutil
import socket
import ssl
import subprocess

import pytest

from conftest import (client_hello, fwd, https_get_raw, raw_exchange, read_events, tail,
                      wait_for)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
VISITOR = "127.0.0.5"    # allowed by the endpoint's --allow-cidr
STRANGER = "127.0.0.6"   # not allowed
BALANCER = "127.0.0.7"   # HAProxy's source address towards snigate: the one trusted CIDR

pytestmark = pytest.mark.skipif(not shutil.which("haproxy") and not
                                __import__("os").path.exists(HAPROXY), reason="no haproxy")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def haproxy(tmp_path):
    """haproxy(backend_port) -> its front port: `mode tcp`, send-proxy-v2, source BALANCER.
    haproxy([(host, port), ...]) balances round-robin over several (a cluster's nodes)."""
    procs = []

    def start(backend) -> int:
        backends = [("127.0.0.1", backend)] if isinstance(backend, int) else list(backend)
        servers = "\n".join(f"    server gw{i} {h}:{p} send-proxy-v2 source {BALANCER}"
                            for i, (h, p) in enumerate(backends, 1))
        port = free_port()
        cfg = tmp_path / f"haproxy{len(procs)}.cfg"
        cfg.write_text(f"""
global
    log stderr format raw local0 info
defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend public
    bind 127.0.0.1:{port}
    default_backend gw
backend gw
    balance roundrobin
{servers}
""")
        log = open(tmp_path / f"haproxy{len(procs)}.log", "wb")
        p = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=log, stderr=log,
                             start_new_session=True)
        procs.append((p, tmp_path / f"haproxy{len(procs)}.log"))

        def listening():
            if p.poll() is not None:
                pytest.fail(f"haproxy exited: {tail((tmp_path / cfg.name).read_text())}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_for(listening, 10, "haproxy to listen")
        return port

    yield start
    for p, _ in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def conn_events(gw) -> list[dict]:
    return [e["object"]["conn"] for e in read_events(gw.dir / "events.jsonl")
            if e["event_type"] == "tcp_connection_closed.v0"]


def test_visitor_address_survives_haproxy(gateway_factory, upstream_factory, client_ctx, haproxy):
    # Proves: through HAProxy send-proxy-v2 with its source in --trusted-proxy, the visitor's own
    # address is the forwarded-tcpip originator (ssh -vvv), the `tls --verbose` line, the event's
    # client_ip and what `tls --allow-cidr` judges: the visitor gets through, a stranger does not.
    gw = gateway_factory(args=["--trusted-proxy", f"{BALANCER}/32", "--event-log", "events.jsonl"])
    up = upstream_factory("http", "up")
    t = gw.tunnel([fwd("app.alice.test", up)],
                  command=f"tls --verbose --allow-cidr {VISITOR}/32").start()
    front = haproxy(gw.tls_port)

    port, answer = https_get_raw(front, "app.alice.test", client_ctx, source=VISITOR)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    wait_for(lambda: f"originator {VISITOR} port {port}" in t.log(), 10,
             "ssh's forwarded-tcpip originator to be the visitor")
    wait_for(lambda: f"snigate: {VISITOR}:{port} app.alice.test" in t.stdout() + t.stderr(), 10,
             "the --verbose line to name the visitor")
    ev = wait_for(lambda: [c for c in conn_events(gw) if c["client_ip"] == VISITOR], 10,
                  "the visitor's event")
    assert ev[0]["client_port"] == port and not ev[0].get("refusal_reason"), ev[0]
    assert BALANCER not in t.log(), "HAProxy's address reached the ssh client"

    with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
        https_get_raw(front, "app.alice.test", client_ctx, source=STRANGER)
    ev = wait_for(lambda: [c for c in conn_events(gw) if c["client_ip"] == STRANGER], 10,
                  "the stranger's refusal event")
    assert ev[0]["refusal_reason"] == "cidr_denied", ev[0]
    assert up.accepted == 1, "the stranger reached the upstream"
    assert t.running()


def test_trusted_source_must_send_a_header_others_must_not(gateway_factory, upstream_factory):
    # Proves: a trusted source sending a bare ClientHello (no PROXY header) is refused and counted
    # as bad_proxy_header, and so is a trusted source with a malformed header; an untrusted
    # source's PROXY header is just non-TLS bytes (not_tls), so nobody else can claim an address.
    gw = gateway_factory(args=["--trusted-proxy", f"{BALANCER}/32", "--event-log", "events.jsonl"],
                         admin_listen="127.0.0.1:0")
    up = upstream_factory("http", "up")
    gw.tunnel([fwd("app.alice.test", up)]).start()
    hello = client_hello("app.alice.test")
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    header = sig + b"\x21\x11\x00\x0c" + socket.inet_aton("198.51.100.7") + \
        socket.inet_aton("127.0.0.1") + (4242).to_bytes(2, "big") + (443).to_bytes(2, "big")

    def from_source(source: str, data: bytes):
        with socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10,
                                      source_address=(source, 0)) as s:
            s.sendall(data)
            s.settimeout(5)
            got = b""
            try:
                while chunk := s.recv(4096):
                    got += chunk
            except (ConnectionResetError, socket.timeout):
                pass
            return got

    assert from_source(BALANCER, hello) == b""  # no header from a trusted source: closed
    assert from_source(BALANCER, sig + b"\x31" + hello) == b""  # version 3: malformed
    assert from_source("127.0.0.1", header + hello) == b""  # untrusted: not TLS

    def reasons():
        return [(c["client_ip"], c.get("refusal_reason")) for c in conn_events(gw)]
    wait_for(lambda: len(reasons()) >= 3, 10, "three refusal events")
    assert (BALANCER, "bad_proxy_header") in reasons(), reasons()
    assert reasons().count((BALANCER, "bad_proxy_header")) == 2, reasons()
    assert ("127.0.0.1", "not_tls") in reasons(), reasons()
    assert "198.51.100.7" not in str(reasons())
    metrics = gw.admin("GET", "/metrics").body.decode()
    assert 'snigate_connections_refused_total{reason="bad_proxy_header"} 2' in metrics, metrics
    assert "sni.refuse" in gw.log_text() and "must start with a PROXY v2 header" in gw.log_text()

"""SSH on the public TLS port (--ssh-on-tls-port, issue 13 part 2): the TLS listener tells SSH from
TLS by the first bytes (or 300 ms of silence) and hands SSH to the SSH side, whose pre-auth limits
apply as on the SSH port."""

import socket
import time

from conftest import fwd, https_get, metric, parse_prometheus, raw_exchange, wait_for


def on_tls_port(gw, tunnel):
    """Points a Tunnel at the TLS port, with the host key pinned for that port too."""
    i = tunnel.args.index("-p")
    tunnel.args[i + 1] = str(gw.tls_port)
    key = gw.known_hosts.read_text().split(None, 1)[1]
    with open(gw.known_hosts, "a") as f:
        f.write(f"[{gw.host}]:{gw.tls_port} {key}")
    return tunnel


def read_banner(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Reads until a line ends (the server's version string or refusal line) or `timeout`."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def test_ssh_tunnel_and_tls_visitors_share_the_tls_port(gateway_factory, upstream, client_ctx):
    # Proves: the real OpenSSH client logs in and forwards on the TLS port, and a real TLS request
    # to that name through the same port is routed to it; /metrics counts the one hand-off.
    gateway = gateway_factory(admin_listen="127.0.0.1:0")
    t = on_tls_port(gateway, gateway.tunnel([fwd("app.alice.test", upstream)])).start()
    assert f"Connecting to 127.0.0.1 [127.0.0.1] port {gateway.tls_port}" in t.log(), t.log()
    gateway.wait_routed("app.alice.test")
    answer = https_get(gateway.tls_port, "app.alice.test", client_ctx)
    assert answer.status == 200 and "hello from upstream sni=app.alice.test" in answer.body
    assert "sni.to_ssh" in gateway.log_text()
    samples = parse_prometheus(gateway.admin("GET", "/metrics").body.decode())
    assert metric(samples, "snigate_tls_port_ssh_total") == 1, samples


def test_silent_client_gets_the_ssh_banner_after_the_delay(gateway):
    # Proves: a client that waits for the server to speak first is treated as SSH after ~300 ms
    # (not before: a TLS client's hello may be a moment late) and gets libssh's version string.
    with socket.create_connection(("127.0.0.1", gateway.tls_port), timeout=10) as s:
        t0 = time.monotonic()
        banner = read_banner(s)
        elapsed = time.monotonic() - t0
    assert banner.startswith(b"SSH-2.0-"), banner
    assert 0.25 <= elapsed < 3.0, elapsed


def test_option_off_refuses_ssh_as_not_tls(gateway_factory):
    # Proves: with --no-ssh-on-tls-port an SSH client's version string gets today's not_tls
    # refusal, and a silent client no banner (it waits out the ClientHello timeout).
    gw = gateway_factory(args=["--no-ssh-on-tls-port"])
    r = raw_exchange(gw.tls_port, [b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"])
    assert r.closed and not r.data.startswith(b"SSH-"), r
    wait_for(lambda: 'outcome=invalid reason="not a TLS handshake"' in gw.log_text(), 5,
             "the not_tls refusal line")
    with socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10) as s:
        assert not read_banner(s, timeout=1.0).startswith(b"SSH-")
    assert "sni.to_ssh" not in gw.log_text()


def test_pre_auth_caps_count_tls_port_connections(gateway_factory):
    # Proves: SSH connections on the TLS port take slots of the per-IP unauthenticated cap exactly
    # like those on the SSH port: with a cap of 2, the third (on either port) is told why.
    gw = gateway_factory(args=["--max-unauthenticated-per-ip", "2"])
    held = []
    try:
        for port in (gw.tls_port, gw.ssh_port):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(s)
            assert read_banner(s).startswith(b"SSH-2.0-")
        for port in (gw.tls_port, gw.ssh_port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n")
                line = read_banner(s)
            assert b"too many unauthenticated connections from your address" in line, (port, line)
    finally:
        for s in held:
            s.close()


def test_trusted_proxy_ssh_is_refused_clearly(gateway_factory):
    # Proves: SSH behind a --trusted-proxy's PROXY v2 header is refused (the header is read from
    # the socket, so libssh could not get it untouched) with a line saying what to do instead.
    gw = gateway_factory(args=["--trusted-proxy", "127.0.0.1/32"])
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    header = sig + b"\x21\x11\x00\x0c" + socket.inet_aton("198.51.100.7") + \
        socket.inet_aton("127.0.0.1") + (4242).to_bytes(2, "big") + (443).to_bytes(2, "big")
    r = raw_exchange(gw.tls_port, [header + b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"])
    assert r.closed and not r.data.startswith(b"SSH-"), r
    wait_for(lambda: "does not work through a --trusted-proxy" in gw.log_text(), 5,
             "the trusted-proxy SSH refusal line")

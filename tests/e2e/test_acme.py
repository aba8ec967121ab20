"""ACME TLS-ALPN-01 through the tunnel (issue 14 part 2), with real parts from Debian 12: `pebble`
(a test ACME server) validates `app.alice.test` by connecting to the gateway's public TLS port,
the gateway routes that ClientHello (SNI app.alice.test, ALPN acme-tls/1) through alice's
`ssh -R` like any other, and `lego --tls` behind the tunnel answers it and gets the certificate.
Then a verifying TLS client (Python ssl, and `openssl s_client -verify_return_error`) trusting
only pebble's root sees that certificate through the tunnel.

How pebble reaches the gateway: pebble dials the address DNS gives for the name on its config's
"tlsPort", so the test sets tlsPort to the gateway's TLS port and points pebble's `-dnsserver` at
a tiny DNS responder of its own that answers A 127.0.0.1 for the test zone (a real CA dials
port 443 of the address the public DNS gives: see the README).

What it deliberately doesn't do: use pebble's "always valid" shortcut (PEBBLE_VA_ALWAYS_VALID) or
pebble-challtestsrv; the challenge is answered by lego, through the gateway, for real."""

import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from conftest import (clean_env, free_closed_port, fwd, https_get, read_events, s_client_get, tail,
                      wait_for)

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
LEGO = shutil.which("lego") or "/usr/bin/lego"
NAME = "app.alice.test"
EVENTS = "events.jsonl"  # relative: snigate runs in the gateway's own directory


class DnsResponder:
    """A UDP DNS server on 127.0.0.1:0 answering A 127.0.0.1 for names under `zone` and an empty
    NOERROR for anything else (AAAA included), just enough for pebble's resolver. Records every
    question it got as (name, qtype)."""

    def __init__(self, zone: str):
        self.zone = zone.lower()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.questions: list[tuple[str, int]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @staticmethod
    def _question(msg: bytes) -> tuple[str, int, int]:
        """(name, qtype, end offset) of the first question; names are plain labels (no pointers)."""
        pos, labels = 12, []
        while msg[pos]:
            n = msg[pos]
            labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace"))
            pos += 1 + n
        qtype, _qclass = struct.unpack("!HH", msg[pos + 1:pos + 5])
        return ".".join(labels).lower(), qtype, pos + 5

    def answer(self, msg: bytes) -> bytes:
        qid, flags = struct.unpack("!HH", msg[:4])
        name, qtype, end = self._question(msg)
        self.questions.append((name, qtype))
        ours = name == self.zone or name.endswith("." + self.zone)
        records = b""
        if ours and qtype == 1:  # A: a pointer to the question's name, IN, TTL 60, 127.0.0.1
            records = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        rcode = 0 if ours else 3  # NXDOMAIN outside the zone
        # QR, opcode 0, AA, the client's RD, RA
        reply_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        header = struct.pack("!HHHHHH", qid, reply_flags, 1, 1 if records else 0, 0, 0)
        return header + msg[12:end] + records

    def _serve(self):
        while not self._closed.is_set():
            try:
                msg, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self.answer(msg), peer)
            except (IndexError, struct.error, OSError):
                pass  # not a query we can parse: no answer, as a real server might

    def close(self):
        self._closed.set()
        self.sock.close()
        self._thread.join(2)


class Pebble:
    """`pebble` on 127.0.0.1 with its HTTPS certificate from the test CA, validating TLS-ALPN-01 on
    `tls_port` of whatever `dns_port` resolves the names to."""

    def __init__(self, directory: Path, pki, tls_port: int, dns_port: int):
        self.dir = directory
        self.pki = pki
        self.port = free_closed_port()
        self.management_port = free_closed_port()
        cert, key = pki.leaf(["localhost"])
        self.config = directory / "pebble-config.json"
        self.config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert), "privateKey": str(key),
            # http-01 is not used; give it a port nothing listens on
            "httpPort": free_closed_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        self.log = directory / "pebble.log"
        env = {**clean_env(), "PEBBLE_VA_NOSLEEP": "1",  # validate at once, not after 0-15 s
               "PEBBLE_WFE_NONCEREJECT": "0"}  # no deliberately bad nonces: fewer retries
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [PEBBLE, "-config", str(self.config), "-dnsserver", f"127.0.0.1:{dns_port}",
                 "-strict=false"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=directory,
                env=env, start_new_session=True)
        self.directory_url = f"https://localhost:{self.port}/dir"
        wait_for(self._ready, 30, "pebble's ACME directory")

    def _get(self, url: str) -> bytes:
        ctx = self.pki.client_context()
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.read()

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"pebble exited {self.proc.returncode}:\n{tail(self.log.read_text())}")
        try:
            return b"newOrder" in self._get(self.directory_url)
        except OSError:
            return False

    def root_pem(self) -> str:
        """The root that issued this run's certificates (pebble makes a new one at each start)."""
        return self._get(f"https://localhost:{self.management_port}/roots/0").decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def dns():
    d = DnsResponder("alice.test")
    yield d
    d.close()


def test_tls_alpn_01_through_the_tunnel(gateway_factory, upstream_factory, pki, dns, tmp_path):
    # Proves: an ACME CA's TLS-ALPN-01 validation, sent to the gateway's public port, reaches an
    # ACME client behind alice's tunnel, which gets a certificate for app.alice.test; a TLS client
    # trusting only the CA's root then verifies that certificate through the same tunnel.
    gw = gateway_factory(args=["--event-log", EVENTS])
    up_port = free_closed_port()  # lego's TLS-ALPN-01 listener, later the user's TLS server
    tunnel = gw.tunnel([fwd(NAME, up_port)]).start()

    pebble = Pebble(tmp_path, pki, tls_port=gw.tls_port, dns_port=dns.port)
    try:
        lego_dir = tmp_path / "lego"
        lego_log = tmp_path / "lego.log"
        cmd = [LEGO, "--accept-tos", "--email", "acme@alice.test", "--server", pebble.directory_url,
               "--path", str(lego_dir), "--key-type", "ec256", "--domains", NAME,
               "--tls", "--tls.port", f"127.0.0.1:{up_port}", "run"]
        with open(lego_log, "wb") as out:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               timeout=120, cwd=tmp_path,
                               env={**clean_env(), "LEGO_CA_CERTIFICATES": str(pki.ca)})
        assert p.returncode == 0, (f"lego exited {p.returncode}:\n{tail(lego_log.read_text(), 40)}"
                                   f"\n-- pebble:\n{tail(pebble.log.read_text(), 40)}")
        root = pebble.root_pem()
    finally:
        pebble.stop()

    # The validation really went through DNS to the gateway and was routed through the tunnel:
    # pebble asked our DNS for the name, and the gateway logged a routed connection for it.
    assert (NAME, 1) in dns.questions, dns.questions
    validations = [e["object"] for e in read_events(gw.dir / EVENTS)
                   if e["event_type"].startswith("tcp_connection_closed")
                   and e["object"]["conn"]["server_name"] == NAME]
    assert validations and all(v["conn"]["refusal_reason"] is None and v["endpoint"]
                               for v in validations), validations

    chain = lego_dir / "certificates" / f"{NAME}.crt"
    key = lego_dir / "certificates" / f"{NAME}.key"
    assert chain.exists() and key.exists(), sorted(str(x) for x in lego_dir.rglob("*"))

    # The user's own TLS server now serves the issued certificate on the port the tunnel points at.
    upstream_factory("http", "acme-upstream", cert=(chain, key), port=up_port)
    root_file = tmp_path / "pebble-root.pem"
    root_file.write_text(root)
    ctx = ssl.create_default_context(cafile=str(root_file))  # pebble's root only, not the test CA
    answer = https_get(gw.tls_port, NAME, ctx)
    assert answer.status == 200 and f"sni={NAME}" in answer.body, answer
    assert answer.peer_cert_san == (NAME,), answer.peer_cert_san
    s = s_client_get(gw.tls_port, NAME, root_file)
    assert s.returncode == 0 and "Verification: OK" in s.stdout + s.stderr, s.stdout + s.stderr
    assert "hello from acme-upstream" in s.stdout, s.stdout
    assert tunnel.running()
